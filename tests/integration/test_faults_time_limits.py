"""Time limits in a real worker: at the soft limit the task cleans up and fails saying so; past
the hard limit the pool child is killed, the task is `failed` with a readable reason, and the
same worker keeps serving (a new child takes the next task)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import (
    deliveries,
    figures,
    plain_celery,
    queue_length,
    register_issued,
    successes,
    unacked_count,
    wait_all,
)
from tests.stack import ServiceStack, submit
from trustcard.task_model.names import QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SOFT_LIMIT = 2
HARD_LIMIT = 4
LIMITS = {"TASK_SOFT_TIME_LIMIT": str(SOFT_LIMIT), "TASK_TIME_LIMIT": str(HARD_LIMIT)}


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    stack = ServiceStack(workdir=Path(tmp_path_factory.mktemp("time-limits")), env_overrides=LIMITS)
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_soft_time_limit_lets_the_task_clean_up(limited_stack: ServiceStack) -> None:
    stack = limited_stack
    assert stack.worker is not None
    with stack.client() as client:
        started = time.monotonic()
        task_id = submit(client, "/tasks/test/sleep", seconds=30)
        body = wait_all(client, [task_id], {"failed"}, timeout=20, what="soft limit")[task_id]
        failed_at = time.monotonic()
        elapsed = failed_at - started
        follow_up = submit(client, "/tasks/test/add", x=2, y=3)
        after = wait_all(client, [follow_up], {"completed"}, timeout=20)[follow_up]
        recovery = time.monotonic() - failed_at

    assert body["error"].startswith("StoppedAtSoftTimeLimit: soft time limit reached after 2.")
    assert body["error"].endswith("cleaned up")
    assert "Traceback" not in body["error"]
    assert after["result"] == 5
    log = stack.worker.log()
    assert f"test.sleep hit the soft time limit after {SOFT_LIMIT}." in log
    assert SOFT_LIMIT <= elapsed < HARD_LIMIT + 3
    figures(
        "soft time limit",
        sent=2,
        completed=1,
        failed_as_expected=1,
        lost=0,
        duplicated=0,
        soft_limit_s=SOFT_LIMIT,
        failed_after_seconds=elapsed,
        recovery_seconds=recovery,
    )


def test_hard_time_limit_kills_the_task_and_the_worker_keeps_serving(
    limited_stack: ServiceStack,
) -> None:
    stack = limited_stack
    assert stack.worker is not None
    assert stack.worker.process is not None
    main_pid = stack.worker.process.pid
    # A cleanup longer than the gap between the limits: the hard limit cuts it off. The API
    # does not offer cleanup_seconds, so a plain client sends it by name.
    task_id = str(uuid.uuid4())
    register_issued(stack, task_id, "test.sleep")
    outsider = plain_celery(stack)
    try:
        started = time.monotonic()
        outsider.send_task(
            "test.sleep",
            kwargs={"seconds": 30, "cleanup_seconds": 30},
            task_id=task_id,
            queue=QUEUE,
        )
        with stack.client() as client:
            body = wait_all(client, [task_id], {"failed"}, timeout=20, what="hard limit")[task_id]
            killed_at = time.monotonic()
            elapsed = killed_at - started
            follow_ups = [submit(client, "/tasks/test/add", x=i, y=i) for i in range(4)]
            done = wait_all(client, follow_ups, {"completed"}, timeout=20)
            recovery = time.monotonic() - killed_at
    finally:
        outsider.close()

    assert body["error"] == (
        f"TimeLimitExceeded: the task ran past its hard time limit ({HARD_LIMIT} s)"
    )
    assert [done[i]["result"] for i in follow_ups] == [0, 2, 4, 6]
    assert HARD_LIMIT <= elapsed < HARD_LIMIT + 4
    log = stack.worker.log()
    assert "Hard time limit (4" in log
    # Same main process; the killed task is acked, not redelivered later.
    assert stack.worker.alive()
    assert stack.worker.process.pid == main_pid
    assert deliveries([log], "test.sleep")[task_id] == 1
    assert not successes([log], "test.sleep").get(task_id)
    assert queue_length(stack) == 0
    assert unacked_count(stack) == 0
    figures(
        "hard time limit",
        sent=1 + len(follow_ups),
        completed=len(done),
        failed_as_expected=1,
        lost=0,
        duplicated=0,
        hard_limit_s=HARD_LIMIT,
        failed_after_seconds=elapsed,
        recovery_seconds=recovery,
    )
