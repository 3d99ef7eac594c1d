"""`python -m bench.accuracy_embeddings [--claims N]`: the claim_similarity plug-in, measured.

Needs the `embeddings` extra. Prints:
- per caption kind of bench.accuracy's labelled set (exact, paraphrase, negated, unrelated): the
  best cosine similarity to the claims, and precision/recall of the plug-in at MATCH_THRESHOLD
  (a caption is flagged when the signal's score >= bench.accuracy.FLAG_SCORE), the row to add to
  `python -m bench.accuracy`;
- the costs: model load time and RSS before/after it in a fresh process, embedding N synthetic
  claims once, and per-analysis time (mean, p95) of the whole pipeline with the plug-in against
  that N-claim table; and what max-tasks-per-child recycling adds per task.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.accuracy import CLAIMS, FLAG_SCORE, URL, Tally, caption_cases, claims_table

MAX_TASKS_PER_CHILD = 50
SUBJECTS = (
    "vaccines", "5G towers", "the moon landing", "tap water", "wind turbines", "the election",
    "chemtrails", "bananas", "smart meters", "the new bridge", "face masks", "solar panels",
    "the central bank", "microwaves", "fluoride", "the football club", "mobile phones", "garlic",
)  # fmt: skip
# Every predicate takes the claim's number, so all texts differ (each is embedded).
PREDICATES = (
    "cause {n} kinds of cancer", "were invented by {n} scientists", "contain {n} tracking chips",
    "are banned in {n} countries", "change your DNA in {n} ways", "were faked in studio {n}",
    "make {n} percent of people infertile", "are controlled by a secret group of {n}",
    "cure every disease in {n} days", "will be illegal from the year {n}",
    "poison the water supply of {n} towns", "cost {n} billion to hide",
)  # fmt: skip

_LOAD_PROBE = """
import json, os, time, psutil
proc = psutil.Process()
before = proc.memory_info().rss
started = time.monotonic()
from trustcard.analysis.claim_embeddings import ClaimSimilarityAnalyzer
analyzer = ClaimSimilarityAnalyzer()
analyzer.encoder.encode(["warm up"])
print(json.dumps({"load_seconds": time.monotonic() - started, "rss_before": before,
                  "rss_after": proc.memory_info().rss}))
"""


def synthetic_claims(count: int) -> list[Any]:
    from trustcard.analysis.claims import Claim

    texts = []
    for n in range(count):
        subject = SUBJECTS[n % len(SUBJECTS)]
        predicate = PREDICATES[(n // len(SUBJECTS)) % len(PREDICATES)].format(n=n)
        texts.append(f"{subject} {predicate}")
    start = len(CLAIMS) + 1
    return [Claim(start + i, text, "false", []) for i, text in enumerate(texts)]


def labelled_claims() -> list[Any]:
    from trustcard.analysis.claims import Claim

    return [Claim(i, text, "false", []) for i, (text, _) in enumerate(CLAIMS, 1)]


def accuracy(analyzer: Any) -> list[str]:
    claims = claims_table()  # the same table `python -m bench.accuracy` matches against
    by_kind: dict[str, list[float]] = {}
    flags: dict[str, list[bool]] = {}
    tally = Tally()
    index = analyzer.cache.index(claims)
    for case in caption_cases():
        query = analyzer.encoder.encode([case.caption])[0]
        best = max(float(s) for s in index.matrix @ query)
        by_kind.setdefault(case.kind, []).append(best)
        signal = analyzer.match(case.caption, claims)
        flagged = (signal.score or 0.0) >= FLAG_SCORE
        flags.setdefault(case.kind, []).append(flagged)
        tally.labelled += case.repeats
        tally.called += flagged
        tally.correct += flagged and case.repeats
    lines = [
        f"claim_similarity ({analyzer.version}), flags at score >= {FLAG_SCORE}:",
        "| captions | labelled repeats | flagged | correct | precision | recall |",
        "|---|---|---|---|---|---|",
        f"| all | {tally.labelled} | {tally.called} | {tally.correct} | {tally.precision()} "
        f"| {tally.recall()} |",
        "",
        "| caption kind | flagged / captions | best similarity min / median / max |",
        "|---|---|---|",
    ]
    for kind, values in by_kind.items():
        lines.append(
            f"| {kind} | {sum(flags[kind])} / {len(values)} | {min(values):.2f} / "
            f"{statistics.median(values):.2f} / {max(values):.2f} |"
        )
    return lines


def load_cost(runs: int) -> list[dict[str, float]]:
    """Model load in fresh processes, as a pool child pays it (imports included)."""
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _LOAD_PROBE], capture_output=True, text=True, check=True
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return samples


def pipeline_times(analyzer: Any, claims: list[Any], rounds: int) -> list[tuple[float, float]]:
    """(whole pipeline, claim_similarity stage) seconds per analysis."""
    from trustcard.analysis.pipeline import PipelineConfig, run_pipeline
    from trustcard.analysis.signals import ANALYZER_ENTRY_POINT_GROUP
    from trustcard.analysis.supplied import SuppliedContent

    del analyzer  # the pipeline loads its own through the entry point (cached per process)
    from importlib.metadata import entry_points

    plugins = list(entry_points(group=ANALYZER_ENTRY_POINT_GROUP, name="claim_similarity"))
    config = PipelineConfig(enabled=frozenset({"fact_check", "claim_similarity"}), plugins=plugins)
    captions = [case.caption for case in caption_cases()]
    seconds = []
    for i in range(rounds):
        supplied = SuppliedContent.model_validate({"caption": captions[i % len(captions)]})
        started = time.monotonic()
        result = run_pipeline(URL, supplied, claims=claims, config=config)
        stage = next(s for s in result.stages if s.name == "claim_similarity")
        assert stage.status == "ok", stage
        seconds.append((time.monotonic() - started, stage.seconds))
    return seconds


_LOADED = re.compile(
    r"loaded all-MiniLM-L6-v2 in ([\d.]+) s in process (\d+) \(RSS (\d+) -> (\d+) MiB\)"
)


def worker_figures(claims: list[Any], cache_dir: str, tasks: int) -> list[str]:
    """A real `trustcard worker` (2 prefork children, WORKER_MAX_TASKS_PER_CHILD=50) running
    `tasks` analyses with the plug-in against `claims`, their vectors already in `cache_dir`."""
    import httpx
    import psutil
    from tests.stack import ServiceStack, trustcard_cmd, wait_until

    workdir = Path(tempfile.mkdtemp(prefix="bench-claim-similarity-"))
    stack = ServiceStack(
        workdir=workdir,
        env_overrides={
            "ANALYZERS_ENABLED": "fact_check,claim_similarity",
            "CLAIM_EMBEDDINGS_CACHE_DIR": cache_dir,
            "WORKER_MAX_TASKS_PER_CHILD": str(MAX_TASKS_PER_CHILD),
            "ANALYZER_TIMEOUT_SECONDS": "120",
            "LOG_LEVEL": "INFO",
        },
    )
    claims_file = workdir / "claims.json"
    claims_file.write_text(json.dumps([{"text": c.text, "verdict": c.verdict} for c in claims]))
    captions = [case.caption for case in caption_cases()]
    lines: list[str] = []
    try:
        stack.start()
        subprocess.run(
            trustcard_cmd("claims", "import", str(claims_file)), env=stack.env(), check=True
        )
        assert stack.worker is not None
        assert stack.worker.process is not None
        main = psutil.Process(stack.worker.process.pid)
        fresh_children = [c.memory_info().rss for c in main.children()]
        ids = []
        with httpx.Client(base_url=stack.base_url, timeout=30) as http:
            for n in range(tasks):
                body = {
                    "url": f"https://www.instagram.com/p/Cbench{n:05d}/",
                    "content": {"caption": captions[n % len(captions)], "media": []},
                }
                response = http.post("/analysis/posts", json=body)
                assert response.status_code == 202, response.text
                ids.append(response.json()["analysis_id"])
            results = []
            for analysis_id in ids:

                def done(analysis_id: str = analysis_id) -> dict[str, Any] | None:
                    found: dict[str, Any] = http.get(f"/analysis/posts/{analysis_id}").json()
                    return found if found["status"] in ("completed", "failed") else None

                results.append(wait_until(done, 600, 0.2, "the analysis"))
        main_rss = main.memory_info().rss
    finally:
        stack.stop()
    log_text = stack.worker.log() if stack.worker else ""
    loads = [(float(s), int(pid), int(a), int(b)) for s, pid, a, b in _LOADED.findall(log_text)]
    stage_seconds, pipeline_seconds, statuses = [], [], []
    for result in results:
        stages = {stage["name"]: stage for stage in result["stages"]}
        similarity = stages["claim_similarity"]
        statuses.append(similarity["status"])
        stage_seconds.append(similarity["seconds"])
        pipeline_seconds.append(sum(st["seconds"] for st in result["stages"]))
    load_total = sum(load[0] for load in loads)
    mib = 2**20
    lines += [
        "",
        f"real worker (2 prefork children, max-tasks-per-child {MAX_TASKS_PER_CHILD}), "
        f"{tasks} analyses against {len(claims)} claims (vectors from the cache): "
        f"claim_similarity status counts {dict(collections.Counter(statuses))}",
        f"model loads: {len(loads)} (one per child per {MAX_TASKS_PER_CHILD} tasks), in "
        f"{len({load[1] for load in loads})} distinct child processes, none in the main process "
        f"({main.pid not in {load[1] for load in loads}}); load seconds "
        + ", ".join(f"{load[0]:.2f}" for load in loads),
        "child RSS before -> after the load (MiB): "
        + ", ".join(f"{load[2]} -> {load[3]}" for load in loads)
        + "; fresh children before any task: "
        + ", ".join(f"{rss / mib:.0f}" for rss in fresh_children)
        + f" MiB; main process: {main_rss / mib:.0f} MiB",
        f"load time spread over the tasks: {1000 * load_total / tasks:.0f} ms per task",
    ]
    for what, values in (
        ("claim_similarity stage", stage_seconds),
        ("all stages of an analysis", pipeline_seconds),
    ):
        p95 = statistics.quantiles(values, n=20)[-1]
        lines.append(
            f"{what} in the worker: mean {1000 * statistics.mean(values):.0f} ms, "
            f"p95 {1000 * p95:.0f} ms, max {1000 * max(values):.0f} ms (the model load is not"
            " in any stage: the pipeline constructs the plug-in before its first stage)"
        )
    return lines


def report(claim_count: int, rounds: int, load_runs: int, worker_tasks: int) -> str:
    import psutil

    from trustcard.analysis.claim_embeddings import ClaimSimilarityAnalyzer

    lines = []
    loads = load_cost(load_runs)
    load_mean = statistics.mean(s["load_seconds"] for s in loads)
    mib = 2**20
    lines += [
        f"model load in a fresh process (imports + weights + first encode), {load_runs} runs: "
        + ", ".join(f"{s['load_seconds']:.2f}" for s in loads)
        + f" s (mean {load_mean:.2f} s)",
        "RSS before / after the load: "
        + ", ".join(f"{s['rss_before'] / mib:.0f} / {s['rss_after'] / mib:.0f} MiB" for s in loads),
        f"with max-tasks-per-child {MAX_TASKS_PER_CHILD}: one load per {MAX_TASKS_PER_CHILD} "
        f"tasks per child = {1000 * load_mean / MAX_TASKS_PER_CHILD:.0f} ms per task on average",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["CLAIM_EMBEDDINGS_CACHE_DIR"] = tmp
        from trustcard.config import get_settings

        get_settings.cache_clear()
        analyzer = ClaimSimilarityAnalyzer()
        lines += accuracy(analyzer)
        claims = labelled_claims() + synthetic_claims(claim_count)
        started = time.monotonic()
        analyzer.cache.index(claims)
        embed_seconds = time.monotonic() - started
        fresh = ClaimSimilarityAnalyzer()  # a recycled child: vectors come from the disk cache
        started = time.monotonic()
        fresh.cache.index(claims)
        from_disk = time.monotonic() - started
        assert fresh.cache.embedded == 0
        lines += [
            "",
            f"embedding {len(claims)} claims once: {embed_seconds:.1f} s "
            f"({len(claims) / embed_seconds:.0f} claims/s); a new process reading them from "
            f"the vector cache: {from_disk:.2f} s; "
            f"RSS now {psutil.Process().memory_info().rss / mib:.0f} MiB",
        ]
        seconds = pipeline_times(analyzer, claims, rounds)
        # The pipeline's own plug-in instance builds its index on the first run.
        for what, column in (
            ("whole pipeline (fact_check + claim_similarity)", 0),
            ("claim_similarity stage alone", 1),
        ):
            warm = [run[column] for run in seconds[1:]]
            p95 = statistics.quantiles(warm, n=20)[-1] if len(warm) >= 2 else warm[0]
            lines.append(
                f"{what} against {len(claims)} claims, {len(warm)} analyses after the first: "
                f"mean {1000 * statistics.mean(warm):.0f} ms, p95 {1000 * p95:.0f} ms "
                f"(first, index from the vector cache: {1000 * seconds[0][column]:.0f} ms)"
            )
        if worker_tasks:
            lines += worker_figures(claims, tmp, worker_tasks)
    return "\n".join(lines)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the bench's processes too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=20_000, help="synthetic claims in the table")
    parser.add_argument("--rounds", type=int, default=41, help="pipeline runs to time")
    parser.add_argument(
        "--load-runs", type=int, default=3, help="fresh processes loading the model"
    )
    parser.add_argument(
        "--worker-tasks", type=int, default=150, help="analyses through a real worker (0: none)"
    )
    args = parser.parse_args()
    print(report(args.claims, args.rounds, args.load_runs, args.worker_tasks))


if __name__ == "__main__":
    main()
