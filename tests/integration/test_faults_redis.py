"""Redis restarts and Redis missing at start-up, with real processes and append-only persistence.

test_dependency_outage.py checks the API's 503s and that one new task runs after a restart;
here tasks are queued and running when Redis goes away (gracefully or killed), and both the
API and the worker start while Redis is not there yet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults import (
    Worker,
    deliveries,
    figures,
    lines_about,
    queue_length,
    start_worker,
    stop_quietly,
    successes,
    unacked_count,
    wait_all,
    worker_less_stack,
)
from tests.metrics_text import scrape, value
from tests.stack import (
    Proc,
    ServiceStack,
    submit,
    trustcard_cmd,
    upgrade_database,
    wait_until,
)
from trustcard.local.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

QUEUED = 6
SHORT_OUTAGE = 4.0
LONG_OUTAGE = 20.0


# Running tasks keep running through the outage and store their result once Redis is back:
# the soft limit must outlast a 3 s task plus the 20 s outage.
RESTART_LIMITS = {
    "BROKER_VISIBILITY_TIMEOUT": "50",
    "TASK_TIME_LIMIT": "45",
    "TASK_SOFT_TIME_LIMIT": "40",
}


@pytest.fixture
def bare_stack(tmp_path: Path) -> Iterator[ServiceStack]:
    with worker_less_stack(tmp_path, RESTART_LIMITS) as stack:
        yield stack


def stop_redis(server: RedisServer, how: str) -> None:
    """`graceful`: SIGTERM (a pod stop; Redis flushes its AOF). `crash`: SIGKILL."""
    assert server.process is not None
    if how == "graceful":
        server.stop()
        return
    # appendfsync everysec: writes older than a second are on disk before the kill.
    time.sleep(1.2)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)


def assert_unavailable(client: httpx.Client) -> None:
    """While Redis is down: submissions 503 naming the dependency, readiness 503, liveness 200."""
    started = time.monotonic()
    response = client.post("/tasks/test/add", params={"x": 1, "y": 1})
    assert response.status_code == 503, response.text
    assert response.json()["dependency"] in {"broker", "result backend"}
    assert "unavailable" in response.json()["detail"]
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["dependencies"]["broker"]["ok"] is False
    broker = client.get("/health/detail").json()["dependencies"]["broker"]
    assert broker["url"].startswith("redis://")
    assert broker["error"]
    assert client.get("/health/live").status_code == 200
    assert time.monotonic() - started < 6


@pytest.mark.parametrize(
    ("how", "outage"),
    [
        ("graceful", SHORT_OUTAGE),
        ("crash", SHORT_OUTAGE),
        # Longer than the worker's first result-store retries (jittered backoff).
        ("graceful", LONG_OUTAGE),
    ],
)
def test_queued_and_running_tasks_survive_a_redis_restart(
    bare_stack: ServiceStack, how: str, outage: float
) -> None:
    stack = bare_stack
    assert stack.redis is not None
    worker: Worker | None = None
    try:
        worker = start_worker(stack, "worker")
        main_pid = worker.pid
        with stack.client() as client:
            running = [submit(client, "/tasks/test/sleep", seconds=3) for _ in range(2)]
            queued = [submit(client, "/tasks/test/add", x=i, y=10) for i in range(QUEUED)]
            wait_all(client, running, {"processing"}, timeout=30, what="both sleeps to start")
            assert queue_length(stack) == QUEUED
            assert unacked_count(stack) == 2

            stop_redis(stack.redis, how)
            down_at = time.monotonic()
            assert_unavailable(client)
            time.sleep(max(0.0, outage - (time.monotonic() - down_at)))

            # What Redis holds right after the restart, read before the worker reconnects and
            # drains it (it did between restart and reads once, on a busy machine): the worker
            # (its whole session) is frozen for the restart and the two reads.
            os.killpg(main_pid, signal.SIGSTOP)
            try:
                stack.redis.start()  # same port, same data directory: the AOF is replayed
                up_at = time.monotonic()
                survived_queued = queue_length(stack)
                survived_unacked = unacked_count(stack)
            finally:
                os.killpg(main_pid, signal.SIGCONT)
            wait_until(lambda: client.get("/health/ready").status_code == 200, 15, what="readiness")
            api_recovery = time.monotonic() - up_at
            try:
                bodies = wait_all(
                    client, running + queued, {"completed"}, timeout=60, what="every task"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{lines_about(worker.log(), running)}") from None
            recovery = time.monotonic() - up_at

        log = worker.log()
        effects = successes([log], "test.add") + successes([log], "test.sleep")
        received = deliveries([log], "test.add") + deliveries([log], "test.sleep")
        assert [bodies[i]["result"] for i in queued] == [i + 10 for i in range(QUEUED)]
        assert all(bodies[i]["result"]["slept_seconds"] >= 3 for i in running)
        # Queued tasks ran once; a task running at the outage may run again (at-least-once).
        assert all(effects[i] == 1 for i in queued)
        assert all(effects[i] >= 1 for i in running)
        duplicated = [i for i in running + queued if effects[i] > 1]
        # Redis came back holding every message: the queued ones and the two unacked.
        assert survived_queued + survived_unacked == QUEUED + 2
        # Never revoked by the connection loss: a revoke is acked and the task would be lost,
        # shown as `cancelled` (running tasks now keep running through it).
        revoked = value(
            scrape(worker.metrics_url), "trustcard_task_revoked_total", task_name="test.sleep"
        )
        assert revoked == 0, lines_about(log, running)
        # The very same worker reconnected by itself.
        assert worker.proc.alive()
        assert worker.pid == main_pid
        assert queue_length(stack) == 0
        assert unacked_count(stack) == 0
        figures(
            f"redis restart ({how}, {outage:g} s)",
            sent=len(running) + len(queued),
            completed=len(bodies),
            lost=len(running) + len(queued) - len(bodies),
            duplicated=len(duplicated),
            queued_after_restart=survived_queued,
            unacked_after_restart=survived_unacked,
            started_twice=sum(1 for n in received.values() if n > 1),
            revoked=int(revoked),
            outage_seconds=up_at - down_at,
            api_ready_seconds=api_recovery,
            recovery_seconds=recovery,
        )
    finally:
        stop_quietly(worker)


def worker_alive(stack: ServiceStack) -> subprocess.CompletedProcess[str]:
    """The worker's liveness probe, as the chart runs it."""
    return subprocess.run(
        trustcard_cmd("worker-alive", "--max-age", "5"),
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_api_and_worker_started_before_redis_become_ready_without_restart(
    tmp_path: Path,
) -> None:
    # Redis has a port but is not running yet.
    stack = ServiceStack(workdir=tmp_path, with_worker=False)
    stack.redis = RedisServer(data_dir=tmp_path / "redis", port=free_port())
    worker: Worker | None = None
    try:
        upgrade_database(stack.env()["DATABASE_URL"])
        stack.api_port = free_port()
        stack.api = Proc(
            "api",
            trustcard_cmd("api", "--port", str(stack.api_port)),
            stack.env(),
            tmp_path / "api.log",
        ).start()
        worker = start_worker(stack, "worker", wait_ready=False)
        with stack.client() as client:
            wait_until(
                lambda: _answers(client, "/health/live"), 30, interval=0.2, what="API liveness"
            )
            # Not ready, clearly: readiness 503 naming the broker; submissions 503.
            assert_unavailable(client)
            wait_until(
                lambda: "Cannot connect to redis://" in worker.log() if worker else False,
                30,
                interval=0.2,
                what="the worker's connection error",
            )
            retries_before = worker.log().count("Cannot connect to redis://")
            probe = worker_alive(stack)
            assert probe.returncode == 1, probe
            assert "no heartbeat yet" in probe.stderr
            assert worker.proc.alive()
            time.sleep(3)
            assert worker.log().count("Trying again in") >= 1

            stack.redis.start()
            up_at = time.monotonic()
            wait_until(
                lambda: client.get("/health/ready").status_code == 200, 20, what="API readiness"
            )
            api_ready = time.monotonic() - up_at
            wait_until(lambda: " ready." in worker.log() if worker else False, 40, what="worker")
            worker_ready = time.monotonic() - up_at
            wait_until(lambda: worker_alive(stack).returncode == 0, 15, what="worker heartbeat")
            task_id = submit(client, "/tasks/test/add", x=40, y=2)
            body = wait_all(client, [task_id], {"completed"}, timeout=30)[task_id]
            first_task = time.monotonic() - up_at

        assert body["result"] == 42
        log = worker.log()
        line = next(x for x in log.splitlines() if "Cannot connect to redis://" in x)
        print("worker start-up log line:", line.strip())
        assert f"127.0.0.1:{stack.redis.port}" in line
        assert stack.api.alive()
        assert worker.proc.alive()
        figures(
            "redis unreachable at start-up",
            sent=1,
            completed=1,
            lost=0,
            duplicated=sum(1 for n in successes([log], "test.add").values() if n > 1),
            worker_connect_errors_logged=retries_before,
            api_ready_seconds=api_ready,
            worker_ready_seconds=worker_ready,
            recovery_seconds=first_task,
        )
    finally:
        stop_quietly(worker)
        stack.stop()


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False
