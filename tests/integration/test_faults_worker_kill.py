"""A worker SIGKILLed mid-task (main process and pool children): nothing lost, no effect twice.

With acks late the killed worker's two running tasks stay in Redis' `unacked` hash; another
worker's periodic sweep puts them back on the queue once they are older than the visibility
timeout, so the redelivery delay is that timeout plus at most one sweep interval (10 s).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.faults import (
    SHORT_LIMITS,
    VISIBILITY_TIMEOUT,
    Worker,
    deliveries,
    figures,
    group_alive,
    kill_group,
    plain_celery,
    start_worker,
    stop_quietly,
    successes,
    unacked_count,
    wait_all,
    worker_less_stack,
)
from tests.stack import ServiceStack, submit, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TASKS = 12
SLEEP_SECONDS = 1.5


@pytest.fixture
def short_timeout_stack(tmp_path: Path) -> Iterator[ServiceStack]:
    with worker_less_stack(tmp_path, SHORT_LIMITS) as stack:
        yield stack


def test_sigkilled_worker_tasks_are_redelivered_and_take_effect_once(
    short_timeout_stack: ServiceStack,
) -> None:
    stack = short_timeout_stack
    first: Worker | None = None
    second: Worker | None = None
    try:
        first = start_worker(stack, "worker-a")
        with stack.client() as client:
            ids = [submit(client, "/tasks/test/sleep", seconds=SLEEP_SECONDS) for _ in range(TASKS)]

            def running() -> list[str]:
                bodies = {i: client.get(f"/tasks/{i}").json() for i in ids}
                return [i for i, b in bodies.items() if b["status"] == "processing"]

            in_flight: list[str] = wait_until(
                lambda: (r := running()) and len(r) == 2 and r, 30, interval=0.05, what="2 running"
            )
            kill_group(first.proc)
            killed_at = time.monotonic()
            # The kernel delivers the group's SIGKILL to each child on its own; the main
            # process was reaped above, a child may still be on its way out for a moment.
            wait_until(lambda: not group_alive(first.pid), 5, what="no pool child left alive")
            # The killed worker's messages are neither acked nor back on the queue yet.
            assert unacked_count(stack) >= 2

            second = start_worker(stack, "worker-b")
            redelivered_after: dict[str, float] = {}

            def killed_ones_back() -> bool:
                received = deliveries([second.log()], "test.sleep") if second else {}
                for task_id in in_flight:
                    if received.get(task_id) and task_id not in redelivered_after:
                        redelivered_after[task_id] = time.monotonic() - killed_at
                return len(redelivered_after) == len(in_flight)

            wait_until(killed_ones_back, VISIBILITY_TIMEOUT + 25, interval=0.1, what="redelivery")
            bodies = wait_all(client, ids, {"completed"}, timeout=40, what="every task")
            recovered = time.monotonic() - killed_at

        assert all(b["result"]["slept_seconds"] >= SLEEP_SECONDS for b in bodies.values())
        logs = [first.log(), second.log()]
        effects = successes(logs, "test.sleep")
        received = deliveries(logs, "test.sleep")
        assert set(effects) == set(ids)
        duplicated = [i for i, n in effects.items() if n > 1]
        assert not duplicated, f"ran to success twice: {duplicated}"
        # At-least-once: the killed tasks were delivered twice and started twice.
        assert all(received[i] == 2 for i in in_flight)
        assert unacked_count(stack) == 0
        figures(
            "worker SIGKILL",
            sent=TASKS,
            completed=len(bodies),
            lost=TASKS - len(bodies),
            duplicated=len(duplicated),
            redelivered=len(in_flight),
            started_twice=sum(1 for n in received.values() if n > 1),
            visibility_timeout_s=VISIBILITY_TIMEOUT,
            redelivery_delay_s=max(redelivered_after.values()),
            recovery_seconds=recovered,
        )
        # Not before the visibility timeout (no parallel duplicate), at most one sweep later.
        assert VISIBILITY_TIMEOUT - 2 <= max(redelivered_after.values()) <= VISIBILITY_TIMEOUT + 12
    finally:
        stop_quietly(first, second)


def test_sigkilled_pool_child_requeues_its_task_at_once(short_timeout_stack: ServiceStack) -> None:
    """An OOM kill hits one pool child, not the worker: the task is requeued right away
    (task_reject_on_worker_lost), not after the visibility timeout, and runs to success once."""
    stack = short_timeout_stack
    worker: Worker | None = None
    try:
        worker = start_worker(stack, "worker")
        main = psutil.Process(worker.pid)
        with stack.client() as client:
            task_id = submit(client, "/tasks/test/sleep", seconds=3)
            wait_all(client, [task_id], {"processing"}, timeout=30, what="the task to start")
            child = psutil.Process(pid_running(stack, task_id))
            assert child.ppid() == main.pid
            child.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            body = wait_all(client, [task_id], {"completed"}, timeout=30, what="rerun")[task_id]
            recovered = time.monotonic() - killed_at
            follow_up = submit(client, "/tasks/test/add", x=1, y=2)
            assert (
                wait_all(client, [follow_up], {"completed"}, timeout=20)[follow_up]["result"] == 3
            )

        log = worker.log()
        assert body["result"]["slept_seconds"] >= 3
        assert deliveries([log], "test.sleep")[task_id] == 2
        assert successes([log], "test.sleep")[task_id] == 1
        assert "WorkerLostError" in log
        assert worker.proc.alive()
        assert psutil.Process(worker.pid).is_running()
        assert unacked_count(stack) == 0
        figures(
            "pool child SIGKILL",
            sent=2,
            completed=2,
            lost=0,
            duplicated=int(successes([log], "test.sleep")[task_id] > 1),
            started_twice=int(deliveries([log], "test.sleep")[task_id] > 1),
            recovery_seconds=recovered,
        )
        # Requeued at once: well before the visibility timeout could have brought it back.
        assert recovered < VISIBILITY_TIMEOUT
    finally:
        stop_quietly(worker)


def pid_running(stack: ServiceStack, task_id: str) -> int:
    """The pool child running `task_id`, as the worker reports it (`inspect active`)."""
    outsider = plain_celery(stack)
    try:
        replies = outsider.control.inspect(timeout=2).active() or {}
    finally:
        outsider.close()
    pids = [t["worker_pid"] for tasks in replies.values() for t in tasks if t["id"] == task_id]
    assert len(pids) == 1, replies
    return int(pids[0])
