"""The issue's targets, in one place, judged from one run's own figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bench.figures import Run

# at_least_ratio: value >= limit x reference;  at_most_ratio: value <= limit x reference;
# at_most: value <= limit;                      at_most_plus: value <= reference + limit.
Rule = Literal["at_least_ratio", "at_most_ratio", "at_most", "at_most_plus"]

# Memory change over the memory run that counts as noise, not growth (children recycle every
# 50 tasks, so the worker's sample depends on how far its children are into their 50).
RSS_NOISE_MIB = 5.0


@dataclass(frozen=True)
class Target:
    name: str
    figure: str  # key of the figure judged
    rule: Rule
    limit: float
    reference: str | None = None  # key of the figure it is compared with
    text: str = ""  # the wording


TARGETS: tuple[Target, ...] = (
    Target(
        "recycling: e2e p99",
        "svc.worker.e2e.p99",
        "at_most_ratio",
        2.0,
        "raw.celery.e2e.mtpc0.p99",
        "our p99 end-to-end with recycling at 50 within 2x of raw Celery without recycling",
    ),
    Target(
        "recycling: drain",
        "svc.drain.off",
        "at_least_ratio",
        0.9,
        "raw.celery.drain.mtpc0",
        "our drain rate with recycling >= 0.9x raw Celery without recycling",
    ),
    # Judged for the API as it runs on this host, one uvicorn process per core (API_WORKERS),
    # and for a single process, which has one core at most.
    *(
        target
        for key, who in (("svc.httpN", "one API process per core"), ("svc.http", "1 API process"))
        for target in (
            Target(
                f"submission ({who}): rate at 64 clients",
                f"{key}.c64.rate",
                "at_least_ratio",
                1.0,
                "raw.celery.produce",
                "HTTP submissions/s at 64 clients >= 1.0x the raw single-process apply_async loop",
            ),
            Target(
                f"submission ({who}): p99 at 70 % load",
                f"{key}.open70.p99",
                "at_most",
                25.0,
                None,
                "p99 <= 25 ms at 70 % of that load",
            ),
        )
    ),
    Target(
        "worker: observability cost",
        "svc.drain.on",
        "at_least_ratio",
        0.9,
        "svc.drain.off",
        "drain rate with metrics and tracing on >= 0.9x the same worker with them off",
    ),
    Target(
        "end-to-end: efficient wait p50",
        "svc.e2e.wait.p50",
        "at_most_plus",
        3.0,
        "raw.celery.e2e.mtpc50.p50",
        "HTTP submit -> completed (efficient wait) p50 within raw Celery's p50 + 3 ms",
    ),
    Target(
        "memory: API idle",
        "svc.api_rss.idle",
        "at_most",
        120.0,
        None,
        "API RSS <= 120 MiB idle",
    ),
    Target(
        "memory: API growth",
        "svc.api_rss.growth",
        "at_most",
        RSS_NOISE_MIB,
        None,
        f"no growth over 10,000 tasks (noise allowance {RSS_NOISE_MIB:g} MiB)",
    ),
    Target(
        "memory: worker growth",
        "svc.worker_pss.growth",
        "at_most",
        RSS_NOISE_MIB,
        None,
        f"no growth over 10,000 tasks (noise allowance {RSS_NOISE_MIB:g} MiB)",
    ),
)


def threshold(target: Target, reference: float | None) -> float | None:
    """The value the figure must stay above (at_least_*) or below (the others)."""
    if target.rule == "at_most":
        return target.limit
    if reference is None:
        return None
    if target.rule == "at_most_plus":
        return reference + target.limit
    return target.limit * reference


def verdict(target: Target, run: Run) -> dict[str, Any]:
    """pass / miss (and by how much), or not measured, for one target."""
    value = run.value(target.figure)
    reference = run.value(target.reference) if target.reference else None
    bound = threshold(target, reference)
    figure = run.figures.get(target.figure)
    result: dict[str, Any] = {
        "name": target.name,
        "text": target.text,
        "figure": target.figure,
        "unit": figure.unit if figure else "",
        "value": value,
        "reference": target.reference,
        "reference_value": reference,
        "rule": target.rule,
        "limit": target.limit,
        "threshold": bound,
        "passed": None,
        "miss_by": None,
    }
    if value is None or bound is None:
        return result
    higher_is_better = target.rule == "at_least_ratio"
    passed = value >= bound if higher_is_better else value <= bound
    result["passed"] = passed
    if not passed:
        # Relative shortfall: how far from the threshold, as a fraction of it.
        result["miss_by"] = abs(value - bound) / bound if bound else None
    return result


def evaluate(run: Run) -> None:
    run.targets = [verdict(target, run) for target in TARGETS]
