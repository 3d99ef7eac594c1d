"""Baselines: raw Redis round trips, and a plain Celery app with the stock prefork pool."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from tests.stack import Proc

from bench import raw_app
from bench.figures import Run
from bench.procs import (
    bench_env,
    drain_rate,
    log_size,
    phase,
    process_rss,
    redis_server,
    run_json,
    set_consuming,
    tree_pss,
    wait_drained,
    wait_for_log,
)
from bench.sizes import Sizes
from bench.stats import latency_summary, mib, rate
from trustcard.local.redis_server import RedisServer

GROUP_REDIS = "Raw Redis (redis-py, 1 client)"
GROUP_CELERY = "Raw Celery (stock prefork, same settings)"
STATS = ("p50", "p95", "p99", "max")
PARENT_GROWTH_KEY = "raw.celery.worker_parent_growth"
PER_TASKS = 1000  # RSS growth is given per this many tasks


def recycling_label(max_tasks_per_child: int) -> str:
    return f"recycling at {max_tasks_per_child}" if max_tasks_per_child else "no recycling"


def e2e_key(max_tasks_per_child: int, stat: str) -> str:
    return f"raw.celery.e2e.mtpc{max_tasks_per_child}.{stat}"


def drain_key(max_tasks_per_child: int) -> str:
    return f"raw.celery.drain.mtpc{max_tasks_per_child}"


@dataclass
class RawWorker:
    """`celery -A bench.raw_app worker -c 2` against one redis-server."""

    workdir: Path
    redis: RedisServer
    max_tasks_per_child: int
    proc: Proc | None = None

    def env(self) -> dict[str, str]:
        return bench_env(
            BENCH_BROKER_URL=self.redis.url(0),
            BENCH_BACKEND_URL=self.redis.url(1),
            BENCH_MAX_TASKS_PER_CHILD=str(self.max_tasks_per_child),
        )

    def client(self, loop: str, count: int, timeout: float) -> dict[str, Any]:
        argv = [sys.executable, "-m", "bench.raw_client", loop, str(count)]
        return run_json(argv, self.env(), timeout)

    def start(self) -> int:
        log_path = self.workdir / f"raw-worker-mtpc{self.max_tasks_per_child}.log"
        offset = log_size(log_path)
        argv = [sys.executable, "-m", "celery", "--app", "bench.raw_app:app", "worker"]
        argv += ["--concurrency", "2", "--without-mingle", "--loglevel", "INFO"]
        self.proc = Proc("raw-worker", argv, self.env(), log_path).start()
        wait_for_log(self.proc, " ready.", offset, 60)
        assert self.proc.process is not None
        return self.proc.process.pid

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


def measure_redis_floor(run: Run, workdir: Path, sizes: Sizes) -> None:
    """LPUSH then RPOP, one client, one pair at a time: what any queue on Redis costs."""
    with redis_server(workdir / "floor") as server:
        client = redis.Redis.from_url(server.url(0))
        key = "bench:floor"
        for _ in range(200):
            client.lpush(key, b"x")
            client.rpop(key)
        pairs_ms: list[float] = []
        started = time.perf_counter()
        for _ in range(sizes.redis_pairs):
            before = time.perf_counter()
            client.lpush(key, b"x")
            client.rpop(key)
            pairs_ms.append((time.perf_counter() - before) * 1000)
        seconds = time.perf_counter() - started
        client.close()
    summary = latency_summary(pairs_ms)
    run.add(
        "raw.redis.pairs",
        GROUP_REDIS,
        "LPUSH+RPOP round trips",
        rate(len(pairs_ms), seconds),
        "pairs/s",
        "higher",
    )
    for stat in ("p50", "p99"):
        run.add(
            f"raw.redis.pair.{stat}",
            GROUP_REDIS,
            f"LPUSH+RPOP pair latency {stat}",
            summary[stat],
            "ms",
            "lower",
        )
    run.samples["raw Redis LPUSH+RPOP"] = pairs_ms


def measure_producer(run: Run, workdir: Path, sizes: Sizes) -> None:
    """A single-process apply_async loop (no worker running) and that process's RSS."""
    with redis_server(workdir / "producer") as server:
        worker = RawWorker(workdir, server, 50)
        result = worker.client("produce", sizes.produce, timeout=300)
    calls_ms = [_float(x) for x in _list(result["calls_ms"])]
    summary = latency_summary(calls_ms)
    run.add(
        "raw.celery.produce",
        GROUP_CELERY,
        "apply_async loop (1 process, no worker)",
        rate(len(calls_ms), _float(result["seconds"])),
        "tasks/s",
        "higher",
        baseline="raw.redis.pairs",
    )
    for stat in ("p50", "p99"):
        run.add(
            f"raw.celery.produce.{stat}",
            GROUP_CELERY,
            f"apply_async call {stat}",
            summary[stat],
            "ms",
            "lower",
            baseline=f"raw.redis.pair.{stat}",
        )
    run.add(
        "raw.celery.client_rss",
        GROUP_CELERY,
        "RSS of that producer process",
        mib(_float(result["rss_bytes"])),
        "MiB",
        "lower",
    )
    run.samples["raw Celery apply_async call"] = calls_ms


def measure_worker(run: Run, workdir: Path, sizes: Sizes, max_tasks_per_child: int) -> None:
    """One-at-a-time end-to-end latency, then a drain of queued no-ops, on a raw worker."""
    label = recycling_label(max_tasks_per_child)
    with redis_server(workdir / f"celery-mtpc{max_tasks_per_child}") as server:
        worker = RawWorker(workdir, server, max_tasks_per_child)
        try:
            pid = worker.start()
            if max_tasks_per_child == 50:
                run.add(
                    "raw.celery.worker_pss",
                    GROUP_CELERY,
                    "worker PSS idle (parent + 2 children, recycling at 50)",
                    mib(tree_pss(pid)),
                    "MiB",
                    "lower",
                )
            result = worker.client("e2e", sizes.e2e, timeout=600)
            parent_warm = process_rss(pid)
            # Queue the drain while the worker does not consume, as docs/recycling-stall.md did.
            set_consuming(server.url(0), raw_app.QUEUE, consuming=False)
            ids = [str(x) for x in _list(worker.client("enqueue", sizes.drain, 300)["ids"])]
            set_consuming(server.url(0), raw_app.QUEUE, consuming=True)
            done_at = wait_drained(
                server.url(0), server.url(1), raw_app.QUEUE, ids, timeout=60 + sizes.drain / 20
            )
            parent_growth = mib(process_rss(pid) - parent_warm) * 1000 / len(ids)
        finally:
            worker.stop()
    latencies = [_float(x) for x in _list(result["latencies_ms"])][1:]  # [0]: cold start
    summary = latency_summary(latencies)
    for stat in STATS:
        baseline = e2e_key(0, stat) if max_tasks_per_child else None
        run.add(
            e2e_key(max_tasks_per_child, stat),
            GROUP_CELERY,
            f"apply_async → result.get() {stat}, {label}",
            summary[stat],
            "ms",
            "lower",
            baseline=baseline,
        )
    run.add(
        drain_key(max_tasks_per_child),
        GROUP_CELERY,
        f"drain {len(ids)} queued no-ops, {label}",
        drain_rate(done_at),
        "tasks/s",
        "higher",
        baseline=drain_key(0) if max_tasks_per_child else None,
    )
    run.samples[f"raw Celery e2e, {label}"] = latencies
    if max_tasks_per_child == 50:
        run.add(
            PARENT_GROWTH_KEY,
            GROUP_CELERY,
            f"worker parent RSS growth over the drain, recycling at 50, per {PER_TASKS:,} tasks",
            parent_growth,
            f"MiB/{PER_TASKS:,} tasks",
            "lower",
        )


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _float(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def measure_celery(run: Run, workdir: Path, sizes: Sizes) -> None:
    """The plain Celery app: producer loop, then a worker without and with recycling."""
    with phase("producer loop"):
        measure_producer(run, workdir, sizes)
    for max_tasks_per_child in (0, 50):
        with phase(f"worker, {recycling_label(max_tasks_per_child)}"):
            measure_worker(run, workdir, sizes, max_tasks_per_child)
