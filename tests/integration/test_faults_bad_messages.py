"""Malformed messages sent straight to the queue, bypassing the API: each is rejected or fails
with a readable error, is logged, and is gone from Redis (no redelivery loop); the same worker
process keeps serving."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection

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
from tests.stack import ServiceStack, submit, wait_until
from trustcard.task_model.names import QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# Sent by name with a plain Celery client: the task itself must refuse these arguments.
BAD_CALLS: list[tuple[str, tuple[Any, ...], str]] = [
    ("test.add", ("a", 1), "TypeError: x must be a number, got str"),
    ("test.add", (1,), "TypeError"),
    ("test.add", (True, 1), "TypeError: x must be a number, got bool"),
    ("test.add", (2**60, 1), "ValueError: x must be between -2**53 and 2**53"),
    ("test.sleep", (-1,), "ValueError: seconds must be between 0 and 60, got -1"),
    ("test.long_task", ("slow",), "TypeError: stage_seconds must be a number, got str"),
    ("test.nope", (), "NotRegistered"),
]


@pytest.fixture(scope="module")
def bad_input_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    stack = ServiceStack(workdir=Path(tmp_path_factory.mktemp("bad-messages")))
    try:
        yield stack.start()
    finally:
        stack.stop()


def raw_publish(stack: ServiceStack, body: bytes, content_type: str, **headers: Any) -> None:
    """Put bytes on queue `analysis` with kombu, as a broken or hostile producer would."""
    assert stack.redis is not None
    with Connection(stack.redis.url(0)) as conn:  # type: ignore[no-untyped-call]
        conn.Producer().publish(
            body,
            exchange="",
            routing_key=QUEUE,
            content_type=content_type,
            content_encoding="utf-8",
            headers=headers,
            declare=[],
        )


def task_headers(name: str) -> dict[str, Any]:
    return {"lang": "py", "task": name, "id": str(uuid.uuid4()), "argsrepr": "", "kwargsrepr": ""}


# Raw messages a plain client could never produce: the worker log line each must cause once,
# and the error GET /tasks/{id} shows (None: Celery drops it before reading an id to fail).
RAW_MESSAGES: list[tuple[str, bytes, str, dict[str, Any], str, str | None]] = [
    (
        "pickle (not accepted)",
        b"\x80\x04\x95garbage",
        "application/x-python-serialize",
        task_headers("test.add"),
        "Received invalid task message: Refusing to deserialize untrusted content of type pickle",
        None,
    ),
    (
        "invalid JSON",
        b"{not json",
        "application/json",
        task_headers("test.add"),
        "Can't decode message body: DecodeError",
        None,
    ),
    (
        "no task header",
        json.dumps([[1, 2], {}, {}]).encode(),
        "application/json",
        {},
        "Received and deleted unknown message",
        None,
    ),
    (
        "body not [args, kwargs, embed]",
        json.dumps("just a string").encode(),
        "application/json",
        task_headers("test.add"),
        "Received invalid task message: body must be [args, kwargs, embed]",
        "InvalidTaskError: body must be [args, kwargs, embed]",
    ),
    (
        "args not a list",
        json.dumps([5, {}, None]).encode(),
        "application/json",
        task_headers("test.add"),
        "Received invalid task message: task args must be a list",
        "InvalidTaskError: task args must be a list",
    ),
    (
        "eta not a time",
        json.dumps([[1, 2], {}, None]).encode(),
        "application/json",
        {**task_headers("test.add"), "eta": "tomorrow-ish"},
        "Received invalid task message: header eta is not an ISO 8601 time",
        "InvalidTaskError: header eta is not an ISO 8601 time: 'tomorrow-ish'",
    ),
]


def contains(text: Callable[[], str], part: str) -> bool:
    return part in text()


def test_malformed_messages_are_rejected_and_the_worker_keeps_serving(
    bad_input_stack: ServiceStack,
) -> None:
    stack = bad_input_stack
    assert stack.worker is not None
    assert stack.worker.process is not None
    main_pid = stack.worker.process.pid
    offset = len(stack.worker.log())
    started = time.monotonic()

    outsider = plain_celery(stack)
    call_ids: dict[str, str] = {}
    try:
        for name, args, _ in BAD_CALLS:
            task_id = str(uuid.uuid4())
            register_issued(stack, task_id, name)
            outsider.send_task(name, args=args, task_id=task_id, queue=QUEUE)
            call_ids[task_id] = name
    finally:
        outsider.close()
    raw_ids: dict[str, str] = {}
    for _, body, content_type, headers, _, shown in RAW_MESSAGES:
        if shown is not None:
            register_issued(stack, headers["id"], headers["task"])
            raw_ids[headers["id"]] = shown
        raw_publish(stack, body, content_type, **headers)

    with stack.client() as client:
        failed = wait_all(client, call_ids, {"failed"}, timeout=30, what="bad calls to fail")
        rejected = wait_all(client, raw_ids, {"failed"}, timeout=30, what="rejections stored")
        follow_ups = [submit(client, "/tasks/test/add", x=20, y=i) for i in range(3)]
        done = wait_all(client, follow_ups, {"completed"}, timeout=30, what="valid tasks")
    recovery = time.monotonic() - started

    for (_, _, expected), task_id in zip(BAD_CALLS, call_ids, strict=True):
        error = failed[task_id]["error"]
        assert error.startswith(expected), (expected, error)
        assert "Traceback" not in error
    assert {i: b["error"] for i, b in rejected.items()} == raw_ids
    assert [done[i]["result"] for i in follow_ups] == [20, 21, 22]

    def logged() -> str:
        return stack.worker.log()[offset:] if stack.worker else ""

    for label, *_, line, _ in RAW_MESSAGES:
        wait_until(partial(contains, logged, line), 10, what=f"log line for {label}")
    assert "Received unregistered task of type 'test.nope'" in logged()

    # Nothing is waiting for redelivery: not queued, not held unacked. Let a restore sweep
    # pass (10 s) and check no bad message came back.
    assert queue_length(stack) == 0
    assert unacked_count(stack) == 0
    counts_before = [logged().count(line) for *_, line, _ in RAW_MESSAGES]
    time.sleep(11)
    assert [logged().count(line) for *_, line, _ in RAW_MESSAGES] == counts_before
    assert all(n == 1 for n in counts_before), counts_before
    received: Counter[str] = Counter()
    effects: Counter[str] = Counter()
    for name in ("test.add", "test.sleep", "test.long_task"):
        received += deliveries([logged()], name)
        effects += successes([logged()], name)
    assert all(n == 1 for n in received.values()), received
    assert set(effects) == set(follow_ups)
    assert queue_length(stack) == 0
    assert unacked_count(stack) == 0
    # The very same process served throughout: no crash, no restart loop.
    assert stack.worker.alive()
    assert stack.worker.process.pid == main_pid

    sent = len(BAD_CALLS) + len(RAW_MESSAGES) + len(follow_ups)
    figures(
        "malformed messages",
        sent=sent,
        completed=len(done),
        failed_readably=len(failed) + len(rejected),
        rejected_logged=len(RAW_MESSAGES),
        lost=len(follow_ups) - len(done),
        duplicated=sum(1 for n in effects.values() if n > 1),
        redelivered=sum(1 for n in received.values() if n > 1),
        worker_pid_changed=stack.worker.process.pid != main_pid,
        recovery_seconds=recovery,
    )
