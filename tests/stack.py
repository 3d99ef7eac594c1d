"""Real processes for integration tests: redis-server, `trustcard worker`, `trustcard api`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from trustcard.local.redis_server import RedisServer, free_port


def wait_until(
    check: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """A child process whose output goes to a log file we can read."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def upgrade_database(url: str) -> None:
    """`trustcard db upgrade` on `url`, so the processes' start-up schema check passes."""
    subprocess.run(
        trustcard_cmd("db", "upgrade"),
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        capture_output=True,
        timeout=60,
    )


def trustcard_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trustcard", *args]


@dataclass
class ServiceStack:
    """One Redis, optionally one worker, and one API, all on free loopback ports."""

    workdir: Path
    with_worker: bool = True
    env_overrides: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None
    worker: Proc | None = None
    api: Proc | None = None
    api_port: int = 0
    worker_metrics_port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.redis.url(0),
            RESULT_BACKEND_URL=self.redis.url(1),
            DATABASE_URL=f"sqlite:///{self.workdir / 'trustcard.db'}",
            ENABLE_TEST_ENDPOINTS="true",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
            WORKER_HEARTBEAT_FILE=str(self.workdir / "worker-heartbeat"),
            WORKER_HEARTBEAT_INTERVAL_SECONDS="1",
            # Hermetic: a post page fetch fails at once (nothing listens on the discard port).
            POST_FETCH_BASE_URL="http://127.0.0.1:9",
        )
        env.update(self.env_overrides)
        return env

    def start(self) -> ServiceStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(data_dir=self.workdir / "redis").start()
        # API and worker refuse a database whose schema is not at head: migrate it first.
        upgrade_database(self.env()["DATABASE_URL"])
        if self.with_worker:
            self.start_worker()
        self.api_port = free_port()
        self.api = Proc(
            "api",
            trustcard_cmd("api", "--port", str(self.api_port)),
            self.env(),
            self.workdir / "api.log",
        ).start()
        wait_until(self._api_up, 30, what="the API to answer")
        return self

    @property
    def worker_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.worker_metrics_port}/metrics"

    def start_worker(self, *extra: str) -> Proc:
        self.worker_metrics_port = free_port()
        self.worker = Proc(
            "worker",
            trustcard_cmd("worker", "--concurrency", "2", "--without-mingle", *extra),
            {**self.env(), "WORKER_METRICS_PORT": str(self.worker_metrics_port)},
            self.workdir / "worker.log",
        )
        offset = self.worker.log_path.stat().st_size if self.worker.log_path.exists() else 0
        self.worker.start()
        worker = self.worker
        wait_until(
            lambda: " ready." in worker.log()[offset:] or not worker.alive(),
            60,
            what="the worker to be ready",
        )
        assert worker.alive(), worker.log()[-3000:]
        return worker

    def _api_up(self) -> bool:
        assert self.api is not None
        assert self.api.alive(), self.api.log()[-3000:]
        try:
            return httpx.get(f"{self.base_url}/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        for proc in (self.api, self.worker):
            if proc is not None:
                proc.stop()
        if self.redis is not None:
            self.redis.stop()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)


def submit(client: httpx.Client, path: str, **params: Any) -> str:
    response = client.post(path, params=params)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "submitted"
    task_id: str = body["task_id"]
    return task_id


def poll_until(
    client: httpx.Client, task_id: str, statuses: Iterable[str], timeout: float = 20
) -> dict[str, Any]:
    """GET /tasks/{id} until its status is one of `statuses`; returns that body."""
    wanted = set(statuses)
    seen: list[str] = []

    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        seen.append(body.get("status", "?"))
        return body if body.get("status") in wanted else None

    try:
        result: dict[str, Any] = wait_until(check, timeout, interval=0.05, what=f"status {wanted}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; statuses seen: {sorted(set(seen))}") from None
    return result
