"""Helpers for the fault tests (tests/integration/test_faults_*.py): extra workers, signals to
whole process groups, execution counts from worker logs, queue depth, and printed figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import redis.asyncio
from celery import Celery

from tests.stack import Proc, ServiceStack, trustcard_cmd, wait_until
from trustcard.local.redis_server import free_port
from trustcard.task_model.names import QUEUE
from trustcard.task_model.registry import TaskRecord, save_record

# One line per execution that returned: "Task test.add[<id>] succeeded in 0.01s: 3".
SUCCEEDED = re.compile(r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] succeeded in")
# One line per delivery to a worker (a redelivered message is received again).
RECEIVED = re.compile(r"Task (?P<name>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] received")
# Where each test's figures go as JSON lines, besides the printed line.
FIGURES_FILE_ENV = "FAULT_FIGURES_FILE"
FINISHED = frozenset({"completed", "failed", "cancelled"})


# Short limits for the redelivery tests; the settings validator wants soft < hard < visibility.
VISIBILITY_TIMEOUT = 8
SHORT_LIMITS = {
    "BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    "TASK_TIME_LIMIT": "6",
    "TASK_SOFT_TIME_LIMIT": "5",
}


@contextlib.contextmanager
def worker_less_stack(
    workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[ServiceStack]:
    """Redis and the API, no worker: the test starts (and kills) workers itself."""
    stack = ServiceStack(workdir=workdir, with_worker=False, env_overrides=dict(env or {}))
    try:
        yield stack.start()
    finally:
        stack.stop()


@dataclass
class Worker:
    """A `trustcard worker` with its own log file and metrics port."""

    proc: Proc
    metrics_port: int

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        assert self.proc.process is not None
        return self.proc.process.pid

    def log(self) -> str:
        return self.proc.log()


def start_worker(
    stack: ServiceStack,
    name: str,
    *extra: str,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 60,
) -> Worker:
    """Start one more worker on the stack's Redis, logging to `<workdir>/<name>.log`.

    Unlike stack.start_worker it leaves stack.worker alone, takes extra environment, and can
    return before the worker is ready (Redis may be down on purpose).
    """
    port = free_port()
    proc = Proc(
        name,
        trustcard_cmd("worker", "--concurrency", "2", "--without-mingle", *extra),
        {**stack.env(), "WORKER_METRICS_PORT": str(port), **(env or {})},
        stack.workdir / f"{name}.log",
    )
    offset = proc.log_path.stat().st_size if proc.log_path.exists() else 0
    proc.start()
    if wait_ready:
        wait_until(
            lambda: " ready." in proc.log()[offset:] or not proc.alive(),
            timeout,
            interval=0.1,
            what=f"worker {name} to be ready",
        )
        assert proc.alive(), proc.log()[-3000:]
    return Worker(proc, port)


def kill_group(proc: Proc, sig: int = signal.SIGKILL, timeout: float = 10) -> None:
    """Signal the process's whole session (main process and pool children) and reap it."""
    assert proc.process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.process.pid, sig)
    proc.process.wait(timeout)


def group_members(pid: int) -> list[int]:
    """Live (not zombie) processes of the session `pid` leads: main process and pool children."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(proc.info["pid"]) == pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.info["pid"])
        except (ProcessLookupError, PermissionError):
            continue
    return members


def group_alive(pid: int) -> bool:
    """True while any process of the session `pid` leads is still running."""
    return bool(group_members(pid))


def stop_quietly(*workers: Worker | None) -> None:
    """Fixture teardown: stop workers we started, then kill whatever is left of their groups."""
    for worker in workers:
        if worker is None or worker.proc.process is None:
            continue
        worker.proc.stop(timeout=15)
        if group_alive(worker.pid):
            os.killpg(worker.pid, signal.SIGKILL)


def log_counts(pattern: re.Pattern[str], logs: Iterable[str], task_name: str) -> Counter[str]:
    """How often `pattern` matched each task id of `task_name`, over all the given logs."""
    counts: Counter[str] = Counter()
    for text in logs:
        for match in pattern.finditer(text):
            if match["name"] == task_name:
                counts[match["id"]] += 1
    return counts


def successes(logs: Iterable[str], task_name: str) -> Counter[str]:
    """How many times each task id of `task_name` ran to success (its effect happened)."""
    return log_counts(SUCCEEDED, logs, task_name)


def deliveries(logs: Iterable[str], task_name: str) -> Counter[str]:
    """How many times each task id of `task_name` was delivered to a worker."""
    return log_counts(RECEIVED, logs, task_name)


def broker(stack: ServiceStack) -> redis.Redis:
    assert stack.redis is not None
    return redis.Redis.from_url(stack.redis.url(0), socket_connect_timeout=2, socket_timeout=5)


def queue_length(stack: ServiceStack) -> int:
    """Messages waiting in Redis list `analysis` (not yet delivered to any worker)."""
    with broker(stack) as client:
        return int(client.llen(QUEUE))


def unacked_count(stack: ServiceStack) -> int:
    """Messages delivered to a worker and not acknowledged yet (kombu's `unacked` hash)."""
    with broker(stack) as client:
        return int(client.hlen("unacked"))


def wait_all(
    client: httpx.Client,
    ids: Iterable[str],
    wanted: Iterable[str] = FINISHED,
    timeout: float = 30,
    what: str = "tasks",
) -> dict[str, dict[str, Any]]:
    """Poll until every id's status is in `wanted`; returns the final bodies."""
    want = set(wanted)
    pending = list(ids)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for task_id in list(pending):
            body: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
            if body.get("status") in want:
                done[task_id] = body
                pending.remove(task_id)
        if not pending:
            break
        if time.monotonic() > deadline:
            seen = Counter(client.get(f"/tasks/{i}").json().get("status") for i in pending)
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}: {len(pending)} not in "
                f"{sorted(want)}, statuses {dict(seen)}"
            )
        time.sleep(0.1)
    return done


def plain_celery(stack: ServiceStack) -> Celery:
    """A Celery client that knows nothing of trustcard (no routes, no task modules)."""
    assert stack.redis is not None
    return Celery("outsider", broker=stack.redis.url(0), backend=stack.redis.url(1))


def register_issued(stack: ServiceStack, task_id: str, name: str) -> None:
    """Record an id as the API does at submission, so GET /tasks/{id} shows what it would."""
    assert stack.redis is not None

    async def save() -> None:
        client = redis.asyncio.Redis.from_url(stack.redis.url(1) if stack.redis else "")
        try:
            await save_record(client, TaskRecord.new(task_id, name), 3600)
        finally:
            await client.aclose()

    asyncio.run(save())


def figures(case: str, **values: Any) -> dict[str, Any]:
    """Print one line of figures (pytest -s / -rA shows it) and append it to FAULT_FIGURES_FILE.

    Every case reports at least sent, completed, lost, duplicated and recovery_seconds.
    """
    record: dict[str, Any] = {
        "case": case,
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in values.items()},
    }
    parts = [f"{key}={value}" for key, value in record.items() if key != "case"]
    print(f"[fault figures] {case}: " + ", ".join(parts))
    target = os.environ.get(FIGURES_FILE_ENV)
    if target:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
    return record


def lines_about(text: str, ids: Iterable[str], limit: int = 60) -> str:
    """The log lines (and traceback-free context) that mention any of `ids`, for diagnostics."""
    wanted = tuple(ids)
    hits = [line for line in text.splitlines() if any(i in line for i in wanted)]
    return "\n".join(hits[-limit:])
