"""One run written out: Markdown tables and JSON with every figure, baseline, ratio and target."""

from __future__ import annotations

import json
import math
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import Run
from bench.sizes import Sizes


def fmt(value: float | None, unit: str = "") -> str:
    """A figure with 3 significant digits (no exponent), or an em dash."""
    if value is None or not math.isfinite(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 100 or value == 0:
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def fmt_ratio(ratio: float | None) -> str:
    """3 significant digits: 0.00371x says more than 0.00x."""
    if ratio is None:
        return "—"
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.3g}x"


def verdict_text(target: dict[str, Any]) -> str:
    if target["passed"] is None:
        return "not measured"
    if target["passed"]:
        return "pass"
    miss = target["miss_by"]
    return "MISS" + (f" by {miss:.1%}" if miss is not None else "")


def markdown(run: Run, sizes: Sizes, meta: dict[str, Any]) -> str:
    lines = [
        f"Benchmark run {meta['finished']} on {meta['host']} ({meta['cpus']} CPUs), "
        f"mode {meta['mode']}, {meta['seconds']:.0f} s.",
        "",
        "| group | figure | value | baseline | ratio |",
        "|---|---|---|---|---|",
    ]
    for figure in run.figures.values():
        baseline = run.figures.get(figure.baseline) if figure.baseline else None
        baseline_text = (
            f"{fmt(baseline.value, baseline.unit)} ({baseline.label})" if baseline else "—"
        )
        lines.append(
            f"| {figure.group} | {figure.label} | {fmt(figure.value, figure.unit)} "
            f"| {baseline_text} | {fmt_ratio(figure.ratio)} |"
        )
    lines += ["", "| target (issue 7) | figure | threshold | result |", "|---|---|---|---|"]
    for target in run.targets:
        lines.append(
            f"| {target['name']}: {target['text']} | {fmt(target['value'], target['unit'])} "
            f"| {_threshold_text(target)} | {verdict_text(target)} |"
        )
    if run.failures:
        lines += ["", "Groups that failed (their figures are missing):"]
        lines += [f"- {group}: {error}" for group, error in run.failures.items()]
    if run.notes:
        lines += ["", *(f"- {note}" for note in run.notes)]
    lines += ["", "Sizes: " + ", ".join(f"{k}={v:g}" for k, v in sizes.as_dict().items())]
    return "\n".join(lines) + "\n"


def _threshold_text(target: dict[str, Any]) -> str:
    bound = fmt(target["threshold"], target["unit"])
    rule = target["rule"]
    if rule == "at_least_ratio":
        return f"≥ {bound} ({target['limit']:g}x {target['reference']})"
    if rule == "at_most_ratio":
        return f"≤ {bound} ({target['limit']:g}x {target['reference']})"
    if rule == "at_most_plus":
        return f"≤ {bound} ({target['reference']} + {target['limit']:g})"
    return f"≤ {bound}"


def as_json(run: Run, sizes: Sizes, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "sizes": sizes.as_dict(),
        "figures": [figure.as_dict() for figure in run.figures.values()],
        "targets": run.targets,
        "rss_series": [
            {
                "tasks": tasks,
                "api_rss_mib": api,
                "worker_pss_mib": worker,
                "worker_parent_rss_mib": parent,
            }
            for tasks, api, worker, parent in run.rss_series
        ],
        "notes": run.notes,
        "failures": run.failures,
    }


def run_meta(mode: str, seconds: float, cpus: int) -> dict[str, Any]:
    return {
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": cpus,
        "mode": mode,
        "seconds": seconds,
    }


def write(run: Run, sizes: Sizes, meta: dict[str, Any], out: Path) -> str:
    """Write latest.md and latest.json into `out`; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(run, sizes, meta)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps(as_json(run, sizes, meta), indent=2) + "\n")
    return text
