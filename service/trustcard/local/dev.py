"""`trustcard dev`: embedded Redis + worker + API as child processes, stopped together."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from trustcard.config import Settings, redact_url
from trustcard.local.redis_server import RedisServer, free_port, port_in_use
from trustcard.local.state import DevState
from trustcard.task_model.names import QUEUE
from trustcard.task_model.status import PROGRESS_STATE

DEFAULT_WORKER_METRICS_PORT = Settings.model_fields["WORKER_METRICS_PORT"].default

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Ctrl-C: running tasks get this long to finish, then go back to the queue (Celery's soft
# shutdown); the next start runs them again. WORKER_SOFT_SHUTDOWN_TIMEOUT overrides it.
DEV_SOFT_SHUTDOWN_SECONDS = 3.0
# Stored states of a run that a stop cut off (the task is queued again, not running).
INTERRUPTED_STATES = {"STARTED", PROGRESS_STATE}
FORCED_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a program stopped by Ctrl-C
# Width of the name in the `name   | line` prefix of each process's output.
PREFIX_WIDTH = 6


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In a child (Linux): get SIGTERM when `trustcard dev` dies, even by SIGKILL.

    Children run in their own session (so Ctrl-C reaches only the supervisor), which also
    means nothing else would stop them if the supervisor were killed outright.
    """
    if not sys.platform.startswith("linux"):
        return
    # libc is loaded in the parent (`_libc()` before the first spawn): the forked child only
    # makes the call, nothing that could wait on a lock another thread held at fork time.
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def requeue_unacked(broker_url: str) -> int:
    """Put every message a worker took but never acked back on its queue; how many.

    Only at start, before our worker runs: the stack's one worker is gone, so each such
    message belongs to a task that was cut off (second Ctrl-C, a killed stack). Without
    this it would wait for the visibility timeout (10 min) and show `processing` meanwhile.
    """
    from kombu.connection import Connection

    with Connection(broker_url) as connection:  # type: ignore[no-untyped-call]
        channel = connection.default_channel
        client = channel.client
        tags = client.zrange(channel.unacked_index_key, 0, -1)
        for tag in tags:
            channel.qos.restore_by_tag(tag.decode(), client)
        return len(tags)


def forget_interrupted_runs(broker_url: str, backend_url: str, queue: str) -> int:
    """Queued tasks whose stored state is a run that was cut off show `pending` again; how many.

    A requeued task keeps the STARTED/PROGRESS state of its cut-off run until the worker takes
    it again; for the moments between the API answering and that, the API would show the old
    run as `processing`. Deleting that state (Celery's `celery-task-meta-<id>`) makes it PENDING.
    """
    import json

    import redis
    from kombu.connection import Connection

    with Connection(broker_url) as connection:  # type: ignore[no-untyped-call]
        channel = connection.default_channel
        lists = [channel._q_for_pri(queue, priority) for priority in channel.priority_steps]
        messages = [raw for name in set(lists) for raw in channel.client.lrange(name, 0, -1)]
    backend = redis.Redis.from_url(backend_url)
    forgotten = 0
    try:
        for raw in messages:
            task_id = json.loads(raw).get("headers", {}).get("id")
            key = f"celery-task-meta-{task_id}"
            meta = backend.get(key) if task_id else None
            if meta and json.loads(meta).get("status") in INTERRUPTED_STATES:
                forgotten += backend.delete(key)
    finally:
        backend.close()
    return forgotten


class OutputPrefixer:
    """Copies children's output lines to our stdout as `name   | line`, one line at a time."""

    def __init__(self) -> None:
        # Re-entrant: the signal handler says a line from the main thread, maybe mid-say.
        self._lock = threading.RLock()
        self._threads: list[threading.Thread] = []

    def say(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()

    def follow(self, name: str, stream: IO[bytes]) -> None:
        prefix = f"{name:<{PREFIX_WIDTH}} | "
        thread = threading.Thread(
            target=self._copy, args=(prefix, stream), name=f"output-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _copy(self, prefix: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self.say(prefix + raw.decode(errors="replace").rstrip("\r\n"))

    def drain(self, timeout: float = 2.0) -> None:
        """Wait for the last lines of stopped children (their pipes end when they exit)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


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
    soft_shutdown_seconds: str = str(DEV_SOFT_SHUTDOWN_SECONDS)
    output: OutputPrefixer = field(default_factory=OutputPrefixer)
    redis: RedisServer | None = None

    @property
    def state(self) -> DevState:
        """This stack's own directory under the data directory: one per port."""
        return DevState.for_port(self.data_dir, self.port)

    def run(self) -> int:
        if port_in_use(self.host, self.port):
            raise PortTaken(
                f"port {self.port} on {self.host} is taken (another `trustcard dev`?); "
                "stop it or pass --port"
            )
        if self.flower_port and port_in_use(self.host, self.flower_port):
            raise PortTaken(f"Flower's port {self.flower_port} is taken; pass --flower-port")
        state = self.state
        state.acquire()  # raises StateDirInUse
        self._note_old_layout()
        _libc()
        redis = self.redis = RedisServer(
            data_dir=state.path / "redis", preexec=die_with_parent, log_to_pipe=True
        )
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._request_stop)
        try:
            redis.start()
            requeued = requeue_unacked(redis.url(0))
            if requeued:
                self.output.say(
                    f"trustcard dev: {requeued} task(s) cut off at the last stop are queued again"
                )
            forget_interrupted_runs(redis.url(0), redis.url(1), QUEUE)
            env = self._child_env(redis)
            self.database_url = env["DATABASE_URL"]
            self.soft_shutdown_seconds = env["WORKER_SOFT_SHUTDOWN_TIMEOUT"]
            state.write_info(
                {
                    "pid": os.getpid(),
                    "port": self.port,
                    "api": f"http://{self.host}:{self.port}",
                    "redis_url": redis.url(0),
                    "database_url": self.database_url,
                }
            )
            self._upgrade_database(self.database_url)
            self._spawn("worker", ["worker", "--concurrency", str(self.concurrency)], env)
            self._spawn("api", ["api", "--host", self.host, "--port", str(self.port)], env)
            if self.flower_port:
                self._spawn("flower", self._flower_args(env), env)
            # Readers start after the last fork: preexec_fn is only safe without threads.
            assert redis.process is not None
            assert redis.process.stdout is not None
            self.output.follow("redis", redis.process.stdout)
            for name, child in self.children.items():
                assert child.stdout is not None
                self.output.follow(name, child.stdout)
            if self._wait_api_ready():
                self._banner(redis)
                if self.flower_port:
                    print(f"  flower     http://{self.host}:{self.flower_port}/\n", flush=True)
            return self._supervise()
        finally:
            self._stop_children()
            redis.stop()
            self.output.drain()
            self.output.say("trustcard dev: stopped API, worker and Redis")
            state.release()

    def _note_old_layout(self) -> None:
        if (self.data_dir / "redis").is_dir():
            self.output.say(
                f"trustcard dev: {self.data_dir / 'redis'} is from before state directories "
                f"per port and is not used; move it (and trustcard.db) into {self.state.path} "
                "to keep its data"
            )

    def _child_env(self, redis: RedisServer) -> dict[str, str]:
        env = dict(os.environ)
        env["REDIS_URL"] = redis.url(0)
        env["RESULT_BACKEND_URL"] = redis.url(1)
        env.setdefault("DATABASE_URL", f"sqlite:///{(self.state.path / 'trustcard.db').resolve()}")
        env.setdefault("ENABLE_TEST_ENDPOINTS", "true")
        env.setdefault("WORKER_SOFT_SHUTDOWN_TIMEOUT", str(DEV_SOFT_SHUTDOWN_SECONDS))
        # Children write through pipes: line by line, not in 8 KB blocks.
        env["PYTHONUNBUFFERED"] = "1"
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
            self.output.say(f"trustcard dev: {migrate.schema_status(engine).describe()}")
        finally:
            engine.dispose()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        # Own session: Ctrl-C reaches only us, and we stop children in order (API, worker, Redis).
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "trustcard", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # safe: no reader thread runs yet (see run)
        )

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            self._kill_now()
        self.stopping = True
        self.output.say(
            f"trustcard dev: stopping; running tasks get {self.soft_shutdown_seconds} s, then "
            "go back to the queue (Ctrl-C again: kill at once)"
        )

    def _kill_now(self) -> None:
        """Second Ctrl-C: SIGKILL every process group we started and leave at once.

        Tasks cut off here stay unacked in Redis; the next start queues them again.
        """
        processes = [*self.children.values()]
        if self.redis is not None and self.redis.process is not None:
            processes.append(self.redis.process)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # own session: pgid == pid
        self.output.say("trustcard dev: second Ctrl-C: killed API, worker and Redis at once")
        os._exit(FORCED_EXIT_CODE)

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
        self.output.say(
            "\ntrustcard dev is up:\n"
            f"  API        {base}  (health {base}/health, OpenAPI {base}/openapi.json)\n"
            f"  Redis      {redis.url(0)} (broker), {redis.url(1)} (results)\n"
            f"  data       {self.state.path.resolve()}\n"
            f"  database   {redact_url(self.database_url)}\n"
            f"  worker     queue analysis, {self.concurrency} processes\n"
            f"  metrics    {base}/metrics (API), "
            f"http://127.0.0.1:{self.worker_metrics_port}/metrics (worker)\n"
            f"  try        curl -X POST '{base}/tasks/test/add?x=5&y=3'\n"
            "  stop       Ctrl-C (twice: kill at once)\n"
        )

    def _supervise(self) -> int:
        while not self.stopping:
            for name, child in self.children.items():
                if child.poll() is not None:
                    self.output.say(
                        f"trustcard dev: {name} exited with {child.returncode}; stopping"
                    )
                    return 1
            time.sleep(0.2)
        return 0

    def _stop_children(self, timeout: float = 15.0) -> None:
        # The API stops taking requests; the worker gets SIGQUIT, Celery's cold shutdown with
        # the soft-shutdown wait: tasks done within WORKER_SOFT_SHUTDOWN_TIMEOUT finish, the
        # others go back to the queue at once (a warm SIGTERM waits up to the 5 min limit).
        stop_signals = {"api": signal.SIGTERM, "worker": signal.SIGQUIT}
        running = {name: child for name, child in self.children.items() if child.poll() is None}
        for name, child in running.items():
            child.send_signal(stop_signals.get(name, signal.SIGTERM))
        deadline = time.monotonic() + timeout
        for name, child in running.items():
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.output.say(f"trustcard dev: {name} did not stop in {timeout:g} s; killing it")
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
