"""The service under test: its own redis-server, `trustcard api` and `trustcard worker`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from tests.stack import Proc, trustcard_cmd, upgrade_database, wait_until

from bench.procs import bench_env, log_size, process_rss, run_json, tree_pss, wait_for_log
from trustcard.local.redis_server import RedisServer, free_port
from trustcard.task_model.names import QUEUE

MAX_TASKS_PER_CHILD = 50  # the service's default, kept for every service measurement


@dataclass(frozen=True)
class Observability:
    """What the worker exports while it works."""

    metrics: bool  # /metrics served (and scraped once a second, as Prometheus would)
    tracing_endpoint: str | None  # OTLP/HTTP endpoint for spans; None: tracing off
    task_events: bool = False  # WORKER_SEND_TASK_EVENTS: what Flower shows tasks from


DEFAULT_OBSERVABILITY = Observability(metrics=True, tracing_endpoint=None)


@dataclass
class Service:
    """One redis-server, one API and (when started) one worker, on free loopback ports."""

    workdir: Path
    redis: RedisServer | None = None
    api: Proc | None = None
    worker: Proc | None = None
    api_port: int = 0
    metrics_port: int = 0
    scraped: list[int] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.workdir / 'trustcard.db'}"

    @property
    def redis_url(self) -> str:
        """The broker (database 0 of our redis-server)."""
        assert self.redis is not None
        return self.redis.url(0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self, **extra: str) -> dict[str, str]:
        assert self.redis is not None
        env = bench_env(
            REDIS_URL=self.redis.url(0),
            RESULT_BACKEND_URL=self.redis.url(1),
            DATABASE_URL=self.database_url,
            ENABLE_TEST_ENDPOINTS="true",
            WORKER_MAX_TASKS_PER_CHILD=str(MAX_TASKS_PER_CHILD),
            WORKER_CONCURRENCY="2",
            LOG_LEVEL="INFO",
            WORKER_METRICS_PORT="0",
        )
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            env.pop(name, None)
        env.update(extra)
        return env

    def start(self) -> Service:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(data_dir=self.workdir / "redis").start()
        # The API and the worker refuse to start on a database without the schema.
        upgrade_database(self.database_url)
        self.api_port = free_port()
        self.api = Proc(
            "api",
            trustcard_cmd("api", "--port", str(self.api_port)),
            self.env(),
            self.workdir / "api.log",
        ).start()
        wait_until(self._api_up, 60, what="the API to answer")
        return self

    def _api_up(self) -> bool:
        assert self.api is not None
        return _answers(self.api, self.base_url)

    @contextmanager
    def extra_api(self, processes: int) -> Iterator[str]:
        """A second `trustcard api` with `processes` uvicorn processes; yields its base URL."""
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        api = Proc(
            f"api-{processes}",
            trustcard_cmd("api", "--port", str(port)),
            self.env(API_WORKERS=str(processes)),
            self.workdir / f"api-{processes}.log",
        ).start()
        try:
            wait_until(lambda: _answers(api, base_url), 60, what=f"the {processes}-process API")
            yield base_url
        finally:
            api.stop()

    def start_worker(self, observability: Observability = DEFAULT_OBSERVABILITY) -> int:
        """Start `trustcard worker -c 2` and wait until it is ready; returns its pid."""
        extra: dict[str, str] = {}
        self.metrics_port = free_port() if observability.metrics else 0
        extra["WORKER_METRICS_PORT"] = str(self.metrics_port)
        if observability.tracing_endpoint:
            extra["OTEL_EXPORTER_OTLP_ENDPOINT"] = observability.tracing_endpoint
            extra["OTEL_SERVICE_NAME"] = "trustcard-worker-bench"
        if observability.task_events:
            extra["WORKER_SEND_TASK_EVENTS"] = "true"
        log_path = self.workdir / "worker.log"
        offset = log_size(log_path)
        argv = trustcard_cmd("worker", "--concurrency", "2", "--without-mingle")
        self.worker = Proc("worker", argv, self.env(**extra), log_path).start()
        wait_for_log(self.worker, " ready.", offset, 60)
        return self.worker_pid

    @property
    def worker_pid(self) -> int:
        assert self.worker is not None
        assert self.worker.process is not None
        return self.worker.process.pid

    @property
    def api_pid(self) -> int:
        assert self.api is not None
        assert self.api.process is not None
        return self.api.process.pid

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def stop(self) -> None:
        self.stop_worker()
        if self.api is not None:
            self.api.stop()
        if self.redis is not None:
            self.redis.stop()

    def api_rss(self) -> int:
        return process_rss(self.api_pid)

    def worker_pss(self) -> int:
        """PSS of the worker's parent and pool children (shared pages counted once)."""
        return tree_pss(self.worker_pid)

    def purge_queue(self) -> None:
        """Drop queued submissions (of a throughput run) so the next phase starts empty."""
        assert self.redis is not None
        client = redis.Redis.from_url(self.redis.url(0))
        try:
            client.delete(QUEUE)
        finally:
            client.close()

    def celery_client(self, loop: str, count: int, timeout: float) -> dict[str, Any]:
        """bench.raw_client against our broker and worker, sending test.add by name."""
        assert self.redis is not None
        env = bench_env(BENCH_BROKER_URL=self.redis.url(0), BENCH_BACKEND_URL=self.redis.url(1))
        argv = [sys.executable, "-m", "bench.raw_client", loop, str(count)]
        return run_json([*argv, "--task", "test.add", "--queue", QUEUE], env, timeout)

    @contextmanager
    def scraping(self, interval: float = 1.0) -> Iterator[None]:
        """Scrape the worker's /metrics every `interval` s meanwhile, like Prometheus."""
        if not self.metrics_port:
            yield
            return
        stop = threading.Event()
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"

        def scrape() -> None:
            with httpx.Client(timeout=5) as client:
                while True:
                    try:
                        self.scraped.append(len(client.get(url).content))
                    except httpx.HTTPError:
                        self.scraped.append(0)
                    if stop.wait(interval):
                        return

        thread = threading.Thread(target=scrape, name="metrics-scraper", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)


def _answers(api: Proc, base_url: str) -> bool:
    if not api.alive():
        raise RuntimeError(f"the API exited:\n{api.log()[-3000:]}")
    try:
        return httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def generate_load(
    base_url: str,
    mode: str,
    processes: int,
    seconds: float,
    *,
    clients: int = 1,
    rate: float = 0.0,
    requests: int | None = None,
    keep_ids: bool = False,
) -> dict[str, Any]:
    """Run `processes` bench.httpgen processes together; their outcomes summed.

    Clients, rate and request count are split evenly between the processes, which all start
    timing at the same wall-clock moment.
    """
    start_at = time.time() + 0.6 + 0.2 * processes
    results = Path(tempfile.mkdtemp(prefix="httpgen-"))
    children: list[subprocess.Popen[bytes]] = []
    for index in range(processes):
        argv = [sys.executable, "-m", "bench.httpgen", mode, base_url]
        argv += ["--result", str(results / f"{index}.json")]
        argv += ["--seconds", str(seconds), "--start-at", str(start_at)]
        if mode == "closed":
            share = clients // processes + (1 if index < clients % processes else 0)
            argv += ["--clients", str(share)]
        else:
            argv += ["--rate", str(rate / processes)]
            argv += ["--connections", str(max(1, 64 // processes))]
        if requests is not None:
            count = requests // processes + (1 if index < requests % processes else 0)
            argv += ["--requests", str(count)]
        if keep_ids:
            argv.append("--ids")
        children.append(subprocess.Popen(argv, env=bench_env(), stdin=subprocess.DEVNULL))
    outcomes: list[dict[str, Any]] = []
    try:
        for index, child in enumerate(children):
            if child.wait(timeout=seconds + 120) != 0:
                raise RuntimeError(f"bench.httpgen exited {child.returncode}")
            outcomes.append(json.loads((results / f"{index}.json").read_text()))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(results, ignore_errors=True)
    return merge_outcomes(outcomes)


def merge_outcomes(outcomes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One outcome from several processes that ran over the same window."""
    merged: dict[str, Any] = {
        "processes": len(outcomes),
        "requests": sum(o["requests"] for o in outcomes),
        "errors": sum(o["errors"] for o in outcomes),
        "dropped": sum(o["dropped"] for o in outcomes),
        "seconds": max(o["seconds"] for o in outcomes),
        "latencies_ms": [x for o in outcomes for x in o["latencies_ms"]],
        "task_ids": [x for o in outcomes for x in o["task_ids"]],
        "cpu_seconds": sum(o["cpu_seconds"] for o in outcomes),
    }
    return merged


def cpu_count() -> int:
    return os.cpu_count() or 1
