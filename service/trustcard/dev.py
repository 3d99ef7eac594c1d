"""`trustcard dev`: embedded Redis + worker + API as child processes, stopped together."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from trustcard.config import Settings, redact_url
from trustcard.local_redis import RedisServer, free_port, port_in_use

DEFAULT_WORKER_METRICS_PORT = Settings.model_fields["WORKER_METRICS_PORT"].default

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """In a child (Linux): get SIGTERM when `trustcard dev` dies, even by SIGKILL.

    Children run in their own session (so Ctrl-C reaches only the supervisor), which also
    means nothing else would stop them if the supervisor were killed outright.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class PortTaken(Exception):
    """The API port is already in use (another `trustcard dev`, or something else)."""


@dataclass
class DevStack:
    host: str
    port: int
    data_dir: Path
    concurrency: int
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopping: bool = False
    worker_metrics_port: int = 0
    database_url: str = ""
    # `--flower`: Flower's port beside the stack (0: no Flower).
    flower_port: int = 0

    def run(self) -> int:
        if port_in_use(self.host, self.port):
            raise PortTaken(
                f"port {self.port} on {self.host} is taken (another `trustcard dev`?); "
                "stop it or pass --port"
            )
        if self.flower_port and port_in_use(self.host, self.flower_port):
            raise PortTaken(f"Flower's port {self.flower_port} is taken; pass --flower-port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        redis = RedisServer(data_dir=self.data_dir / "redis", preexec=die_with_parent)
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._request_stop)
        try:
            redis.start()
            env = self._child_env(redis)
            self.database_url = env["DATABASE_URL"]
            self._upgrade_database(self.database_url)
            self._spawn("worker", ["worker", "--concurrency", str(self.concurrency)], env)
            self._spawn("api", ["api", "--host", self.host, "--port", str(self.port)], env)
            if self.flower_port:
                self._spawn("flower", self._flower_args(env), env)
            if self._wait_api_ready():
                self._banner(redis)
                if self.flower_port:
                    print(f"  flower     http://{self.host}:{self.flower_port}/\n", flush=True)
            return self._supervise()
        finally:
            self._stop_children()
            redis.stop()
            print("trustcard dev: stopped API, worker and Redis", flush=True)

    def _child_env(self, redis: RedisServer) -> dict[str, str]:
        env = dict(os.environ)
        env["REDIS_URL"] = redis.url(0)
        env["RESULT_BACKEND_URL"] = redis.url(1)
        env.setdefault("DATABASE_URL", f"sqlite:///{(self.data_dir / 'trustcard.db').resolve()}")
        env.setdefault("ENABLE_TEST_ENDPOINTS", "true")
        if "WORKER_METRICS_PORT" not in env:
            # The documented 9808 unless something (another dev stack) already holds it.
            taken = port_in_use("127.0.0.1", DEFAULT_WORKER_METRICS_PORT)
            env["WORKER_METRICS_PORT"] = str(free_port() if taken else DEFAULT_WORKER_METRICS_PORT)
        self.worker_metrics_port = int(env["WORKER_METRICS_PORT"])
        if self.flower_port:
            # Flower shows tasks only from events; the API (task-sent) and worker send them.
            env.setdefault("WORKER_SEND_TASK_EVENTS", "true")
        return env

    def _flower_args(self, env: dict[str, str]) -> list[str]:
        """Flower on the API's interface; without FLOWER_BASIC_AUTH open, like the dev API."""
        args = ["flower", "--host", self.host, "--port", str(self.flower_port)]
        return args if env.get("FLOWER_BASIC_AUTH") else [*args, "--no-auth"]

    def _upgrade_database(self, url: str) -> None:
        """`trustcard dev` migrates its database itself; API and worker only check it."""
        from trustcard.db import migrate
        from trustcard.db.engine import create_db_engine

        engine = create_db_engine(url)
        try:
            migrate.upgrade(engine)
            print(f"trustcard dev: {migrate.schema_status(engine).describe()}", flush=True)
        finally:
            engine.dispose()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        # Own session: Ctrl-C reaches only us, and we stop children in order (API, worker, Redis).
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "trustcard", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # safe: the supervisor runs no threads
        )

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _wait_api_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self.port}/health/live"
        while not self.stopping and time.monotonic() < deadline:
            if any(child.poll() is not None for child in self.children.values()):
                return False
            try:
                if httpx.get(url, timeout=0.5).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def _banner(self, redis: RedisServer) -> None:
        base = f"http://{self.host}:{self.port}"
        print(
            "\ntrustcard dev is up:\n"
            f"  API        {base}  (health {base}/health, OpenAPI {base}/openapi.json)\n"
            f"  Redis      {redis.url(0)} (broker), {redis.url(1)} (results)\n"
            f"  data       {self.data_dir.resolve()}\n"
            f"  database   {redact_url(self.database_url)}\n"
            f"  worker     queue analysis, {self.concurrency} processes\n"
            f"  metrics    {base}/metrics (API), "
            f"http://127.0.0.1:{self.worker_metrics_port}/metrics (worker)\n"
            f"  try        curl -X POST '{base}/tasks/test/add?x=5&y=3'\n"
            "  stop       Ctrl-C\n",
            flush=True,
        )

    def _supervise(self) -> int:
        while not self.stopping:
            for name, child in self.children.items():
                if child.poll() is not None:
                    print(
                        f"trustcard dev: {name} exited with {child.returncode}; stopping",
                        flush=True,
                    )
                    return 1
            time.sleep(0.2)
        return 0

    def _stop_children(self, timeout: float = 15.0) -> None:
        for name in ("flower", "api", "worker"):
            child = self.children.get(name)
            if child is None or child.poll() is not None:
                continue
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                print(
                    f"trustcard dev: {name} did not stop in {timeout:g} s; killing it", flush=True
                )
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
