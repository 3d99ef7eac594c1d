"""Processes and Redis look-ups shared by the raw and the service measurements."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import redis
from celery import Celery
from tests.stack import Proc, wait_until

from trustcard.local.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
META_PREFIX = "celery-task-meta-"
UNACKED = "unacked"  # kombu's Redis transport: messages delivered but not acked yet


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Say on stderr how long a phase took (where a slow run spends its time)."""
    started = time.monotonic()
    try:
        yield
    finally:
        print(f"bench:   {name}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for our child processes: `bench` and `tests` importable from ROOT."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for_log(proc: Proc, text: str, offset: int, timeout: float) -> None:
    """Wait until `text` appears in proc's log after `offset`; fail if the process dies."""
    wait_until(
        lambda: text in proc.log()[offset:] or not proc.alive(),
        timeout,
        what=f"{proc.name} to log {text!r}",
    )
    if not proc.alive():
        raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-3000:]}")


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def process_rss(pid: int) -> int:
    """RSS of one process (a worker's parent alone: its children are replaced every 50 tasks)."""
    try:
        rss: int = psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return 0
    return rss


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process, its reaped children and its live descendants.

    Pool children replaced by recycling are reaped by the parent, so their time is in its
    children_* fields; the live ones are added one by one.
    """
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += child_times.user + child_times.system
    except psutil.NoSuchProcess:
        return 0.0
    return float(total)


def tree_pss(pid: int) -> int:
    """PSS of a process plus all its descendants (a worker's parent and pool children).

    Summing RSS over a forked tree counts every page the children share copy-on-write with
    the parent once per process (3x for -c 2); PSS splits shared pages between the sharers.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
    return total


def run_json(argv: Sequence[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a helper process and parse the JSON object on the last line of its stdout."""
    done = subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    """A redis-server of our own (broker db0, backend db1), stopped afterwards."""
    server = RedisServer(data_dir=workdir / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def otlp_sink(workdir: Path) -> Iterator[str]:
    """The no-decode OTLP/HTTP sink in its own process; yields its base URL."""
    port = free_port()
    sink = Proc(
        "otlp-sink",
        [sys.executable, "-m", "bench.otlp_sink", str(port)],
        bench_env(),
        workdir / "otlp-sink.log",
    ).start()
    try:
        wait_until(lambda: _listening(port) or not sink.alive(), 15, what="the OTLP sink")
        if not sink.alive():
            raise RuntimeError(f"OTLP sink exited:\n{sink.log()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        sink.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_drained(
    broker_url: str, backend_url: str, queue: str, task_ids: Sequence[str], timeout: float
) -> list[float]:
    """Wait until every task succeeded; returns their completion times (epoch seconds).

    Cheap checks first (queue and unacked hash empty), then the results' `date_done`, which
    the worker stamps when it stores each result.
    """
    broker = redis.Redis.from_url(broker_url)
    backend = redis.Redis.from_url(backend_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if broker.llen(queue) == 0 and broker.hlen(UNACKED) == 0:
                done = completion_times(backend, task_ids)
                if len(done) == len(task_ids):
                    return done
            if time.monotonic() > deadline:
                left = broker.llen(queue) + broker.hlen(UNACKED)
                raise TimeoutError(f"{left} of {len(task_ids)} tasks not done in {timeout:g} s")
            time.sleep(0.1)
    finally:
        broker.close()
        backend.close()


def completion_times(backend: redis.Redis, task_ids: Sequence[str]) -> list[float]:
    """`date_done` of every task in `task_ids` whose result says SUCCESS."""
    times: list[float] = []
    for start in range(0, len(task_ids), 1000):
        keys = [META_PREFIX + task_id for task_id in task_ids[start : start + 1000]]
        for raw in backend.mget(keys):
            if raw is None:
                continue
            meta = json.loads(raw)
            if meta.get("status") == "SUCCESS" and meta.get("date_done"):
                times.append(datetime.fromisoformat(meta["date_done"]).timestamp())
    return times


def drain_rate(done_at: Sequence[float]) -> float:
    """Completions / (last - first completion), as in docs/recycling-stall.md."""
    span = max(done_at) - min(done_at)
    return len(done_at) / span if span > 0 else 0.0


def set_consuming(broker_url: str, queue: str, consuming: bool) -> None:
    """Stop or resume the worker's consumption of `queue` (remote control, no restart)."""
    app = Celery("bench-control", broker=broker_url)
    try:
        if consuming:
            replies = app.control.add_consumer(queue, reply=True, timeout=10, limit=1)
        else:
            replies = app.control.cancel_consumer(queue, reply=True, timeout=10, limit=1)
    finally:
        app.close()
    if not replies:
        raise RuntimeError(f"no worker answered {'add' if consuming else 'cancel'}_consumer")


def wait_idle(broker_url: str, queue: str, timeout: float) -> None:
    """Wait until the queue and the unacked hash are both empty (every task was acked)."""
    broker = redis.Redis.from_url(broker_url)
    deadline = time.monotonic() + timeout
    try:
        while broker.llen(queue) or broker.hlen(UNACKED):
            if time.monotonic() > deadline:
                left = broker.llen(queue) + broker.hlen(UNACKED)
                raise TimeoutError(f"{left} tasks still queued or running after {timeout:g} s")
            time.sleep(0.05)
    finally:
        broker.close()
