"""SIGTERM to a busy worker: warm shutdown finishes running tasks and leaves queued ones in Redis;
with soft shutdown on (WORKER_SOFT_SHUTDOWN_TIMEOUT, REMAP_SIGTERM=SIGQUIT) a task still running
when the timeout ends goes back to the queue and another worker completes it."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import (
    Worker,
    deliveries,
    figures,
    queue_length,
    start_worker,
    stop_quietly,
    successes,
    unacked_count,
    wait_all,
    worker_less_stack,
)
from tests.stack import ServiceStack, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

QUEUED = 6


@pytest.fixture
def bare_stack(tmp_path: Path) -> Iterator[ServiceStack]:
    with worker_less_stack(tmp_path) as stack:
        yield stack


def sigterm_and_wait(worker: Worker, timeout: float) -> float:
    """SIGTERM to the main process only, as Kubernetes does to PID 1; seconds until it exits."""
    assert worker.proc.process is not None
    started = time.monotonic()
    worker.proc.process.send_signal(signal.SIGTERM)
    worker.proc.process.wait(timeout)
    return time.monotonic() - started


def test_warm_shutdown_finishes_running_tasks_and_leaves_the_queue_alone(
    bare_stack: ServiceStack,
) -> None:
    stack = bare_stack
    first: Worker | None = None
    second: Worker | None = None
    try:
        first = start_worker(stack, "worker-a")
        with stack.client() as client:
            running = [submit(client, "/tasks/test/long", stage_seconds=0.8) for _ in range(2)]
            queued = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(QUEUED)]
            wait_all(client, running, {"processing"}, timeout=30, what="both long tasks to start")

            shutdown_seconds = sigterm_and_wait(first, timeout=30)
            assert first.proc.process is not None
            assert first.proc.process.returncode == 0, first.log()[-2000:]
            assert "warm shutdown" in first.log().lower()
            # Both ran to the end in the stopping worker.
            done = wait_all(client, running, {"completed"}, timeout=5, what="long tasks")
            assert all(len(b["result"]["stages"]) == 5 for b in done.values())
            # The rest never left Redis: still queued, nothing held as unacked.
            left_in_queue = queue_length(stack)
            assert left_in_queue == QUEUED
            assert unacked_count(stack) == 0
            assert all(client.get(f"/tasks/{i}").json()["status"] == "pending" for i in queued)

            taken_over = time.monotonic()
            second = start_worker(stack, "worker-b")
            results = wait_all(client, queued, {"completed"}, timeout=30, what="queued tasks")
            recovery = time.monotonic() - taken_over

        assert [results[i]["result"] for i in queued] == [i + 1 for i in range(QUEUED)]
        logs = [first.log(), second.log()]
        effects = successes(logs, "test.long_task") + successes(logs, "test.add")
        assert set(effects) == set(running + queued)
        duplicated = [i for i, n in effects.items() if n > 1]
        assert not duplicated
        assert not successes([second.log()], "test.long_task")
        figures(
            "worker SIGTERM (warm shutdown)",
            sent=len(running) + len(queued),
            completed=len(done) + len(results),
            lost=len(running) + len(queued) - len(done) - len(results),
            duplicated=len(duplicated),
            finished_by_stopping_worker=len(done),
            left_queued=left_in_queue,
            shutdown_seconds=shutdown_seconds,
            recovery_seconds=recovery,
        )
    finally:
        stop_quietly(first, second)


SOFT_TIMEOUT = 2.0


def test_soft_shutdown_requeues_the_long_task_for_another_worker(
    bare_stack: ServiceStack,
) -> None:
    stack = bare_stack
    first: Worker | None = None
    second: Worker | None = None
    soft = {"WORKER_SOFT_SHUTDOWN_TIMEOUT": str(SOFT_TIMEOUT), "REMAP_SIGTERM": "SIGQUIT"}
    try:
        first = start_worker(stack, "worker-a", env=soft)
        with stack.client() as client:
            long_id = submit(client, "/tasks/test/sleep", seconds=20)
            short_id = submit(client, "/tasks/test/sleep", seconds=0.5)
            wait_all(client, [long_id], {"processing"}, timeout=30, what="the long task")
            wait_all(client, [short_id], {"processing", "completed"}, timeout=30, what="short")

            shutdown_seconds = sigterm_and_wait(first, timeout=30)
            log = first.log()
            assert f"Initiating Soft Shutdown, terminating in {SOFT_TIMEOUT}" in log, log[-2000:]
            # The short task fit in the soft timeout; the long one went back to the queue.
            assert client.get(f"/tasks/{short_id}").json()["status"] == "completed"
            requeued = queue_length(stack)
            assert requeued == 1
            assert unacked_count(stack) == 0

            taken_over = time.monotonic()
            second = start_worker(stack, "worker-b")
            body = wait_all(client, [long_id], {"completed"}, timeout=40, what="long task")[long_id]
            recovery = time.monotonic() - taken_over

        assert body["result"]["slept_seconds"] >= 20
        logs = [first.log(), second.log()]
        effects = successes(logs, "test.sleep")
        received = deliveries(logs, "test.sleep")
        assert effects == {long_id: 1, short_id: 1}
        assert received[long_id] == 2
        assert successes([second.log()], "test.sleep") == {long_id: 1}
        figures(
            "worker SIGTERM (soft shutdown)",
            sent=2,
            completed=2,
            lost=0,
            duplicated=sum(1 for n in effects.values() if n > 1),
            requeued=requeued,
            started_twice=1,
            soft_shutdown_timeout_s=SOFT_TIMEOUT,
            shutdown_seconds=shutdown_seconds,
            recovery_seconds=recovery,
        )
        assert shutdown_seconds < SOFT_TIMEOUT + 10
    finally:
        stop_quietly(first, second)
