"""A message whose pop reply is lost as Redis dies is delivered again (issue 14, the BRPOP
window of docs/upstream-redis-outages.md, section 6).

A proxy between the worker's broker connection and Redis forwards the worker's pop but loses
the reply carrying the message (tests/reply_dropping_proxy.py); then Redis is SIGKILLed
(append-only file, `appendfsync always`) and restarted. With kombu's BRPOP the message was
popped (in the AOF) and never stored as unacked: gone, the task stayed `pending` forever. With
our pop script (trustcard.redis_clients.reliable_pop) the pop and the unacked copy are one
step, so the copy survives the restart. The worker, reconnected, finds the pop's receipt and
puts the message back at once; a worker killed with Redis leaves it to the visibility timeout,
after which a new worker runs it.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.worker import state
from kombu.connection import Connection

from tests.faults import (
    SHORT_LIMITS,
    VISIBILITY_TIMEOUT,
    Worker,
    broker,
    deliveries,
    kill_group,
    start_worker,
    stop_quietly,
    successes,
    unacked_count,
    wait_all,
    worker_less_stack,
)
from tests.reply_dropping_proxy import ReplyDroppingProxy
from tests.stack import ServiceStack, submit, wait_until
from trustcard.local.redis_server import RedisServer
from trustcard.redis_clients import broker_transport
from trustcard.redis_clients.broker_transport import TRANSPORT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TASK = "test.add"
# Restored by the next 10 s restore tick once the visibility timeout has passed.
REDELIVERY_BOUND = VISIBILITY_TIMEOUT + 10 + 15


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ServiceStack]:
    with worker_less_stack(tmp_path, SHORT_LIMITS) as stack:
        yield stack


@pytest.mark.parametrize("worker_dies_too", [False, True], ids=["worker survives", "worker killed"])
def test_message_whose_pop_reply_is_lost_as_redis_dies_runs(
    stack: ServiceStack, worker_dies_too: bool
) -> None:
    assert stack.redis is not None
    assert stack.redis.process is not None
    with broker(stack) as client:
        # Every write reaches the disk before its reply leaves: what the kill finds is what
        # Redis did.
        client.config_set("appendfsync", "always")
    proxy = ReplyDroppingProxy(stack.redis.port).start()
    worker: Worker | None = None
    first: Worker | None = None
    try:
        # Only the worker's broker traffic goes through the proxy.
        worker = start_worker(stack, "worker", env={"REDIS_URL": proxy.url(0)})
        with stack.client() as api:
            proxy.arm(TASK.encode())
            task_id = submit(api, "/tasks/test/add", x=20, y=22)
            wait_until(lambda: proxy.dropped == 1, 20, interval=0.05, what="the pop's reply")
            stack.redis.process.send_signal(signal.SIGKILL)
            stack.redis.process.wait(10)
            if worker_dies_too:
                first, worker = worker, None
                kill_group(first.proc)
            time.sleep(1)
            stack.redis.start()
            started = time.monotonic()
            if worker_dies_too:
                worker = start_worker(stack, "second")
            body = wait_all(api, [task_id], {"completed"}, REDELIVERY_BOUND, "the redelivery")
            redelivered_after = time.monotonic() - started
        print(f"\nreliable pop: redelivered and completed {redelivered_after:.1f} s after restart")
        assert body[task_id]["result"] == 42
        assert worker is not None
        if not worker_dies_too:
            # From the receipt on reconnect, not after the visibility timeout.
            assert redelivered_after < VISIBILITY_TIMEOUT, redelivered_after
            assert "goes back to its queue" in worker.log()
        log = worker.log()
        # Ran once: the lost reply was never a delivery, the restored copy is the only one.
        assert deliveries([log], TASK)[task_id] == 1, log[-3000:]
        assert successes([log], TASK)[task_id] == 1
        assert "Unrecoverable error" not in log
        wait_until(lambda: unacked_count(stack) == 0, 10, what="the ack")
    finally:
        stop_quietly(worker, first)
        proxy.close()


@pytest.mark.timeout(60)
def test_only_acked_consumers_get_an_unacked_copy(tmp_path: Path) -> None:
    """As kombu: a no_ack consumer (a control reply queue) leaves no copy nobody would ack."""
    server = RedisServer(data_dir=tmp_path / "redis", appendonly=False).start()
    try:
        client = redis.Redis.from_url(server.url(0))
        with Connection(server.url(0), transport=TRANSPORT) as conn:  # type: ignore[no-untyped-call]
            channel = conn.channel()
            for queue in ("tasks", "replies"):
                channel.queue_declare(queue)
                for n in range(2):
                    message = channel.prepare_message(f"message {n}")
                    channel.basic_publish(message, "", queue)
            got: list[Any] = []
            channel.basic_consume("replies", True, got.append, "no-ack")
            channel.basic_consume("tasks", False, got.append, "ack")
            while len(got) < 4:
                conn.drain_events(timeout=5)
            # The acked queue's two messages have their copy, the no_ack queue's none.
            assert {m.delivery_info["routing_key"] for m in got} == {"tasks", "replies"}
            assert client.hlen("unacked") == 2
            for message in got:
                if message.delivery_info["routing_key"] == "tasks":
                    message.ack()
            assert client.hlen("unacked") == 0
            for queue in ("tasks", "replies"):
                channel.basic_publish(channel.prepare_message("one more"), "", queue)
            assert channel.basic_get("replies", no_ack=True) is not None
            assert client.hlen("unacked") == 0
            fetched = channel.basic_get("tasks")
            assert client.hlen("unacked") == 1
            fetched.ack()
            assert client.hlen("unacked") == 0
    finally:
        server.stop()


# Long enough that a message left to the visibility timeout is plainly late.
LONG_VISIBILITY = {**SHORT_LIMITS, "BROKER_VISIBILITY_TIMEOUT": "90"}


@pytest.mark.timeout(150)
def test_prefetched_messages_go_back_once_redis_is_back(tmp_path: Path) -> None:
    """Messages a worker holds and has not started are put back at once after an outage.

    Celery drops its reserved (prefetched) requests when the broker connection is lost
    (celery/worker/consumer/consumer.py `on_close`) and kombu restores their messages when it
    closes the channel (kombu/transport/virtual/base.py `close` -> `restore_unacked_once`),
    once: with Redis down that restore fails, and the messages waited in `unacked` for the
    visibility timeout (600 s by default; the task stayed `pending`). Ours retries the restore
    on the next connection.
    """
    with worker_less_stack(tmp_path, LONG_VISIBILITY) as stack:
        assert stack.redis is not None
        assert stack.redis.process is not None
        with broker(stack) as client:
            client.config_set("appendfsync", "always")
        # 2 slots and 8 prefetched: the adds wait in the worker behind the two sleeps.
        worker = start_worker(stack, "worker", env={"WORKER_PREFETCH_MULTIPLIER": "4"})
        try:
            with stack.client() as api:
                sleeps = [submit(api, "/tasks/test/sleep", seconds=3) for _ in range(2)]
                wait_all(api, sleeps, {"processing"}, 20, "the sleeps to start")
                adds = [submit(api, "/tasks/test/add", x=i, y=1) for i in range(4)]
                wait_until(
                    lambda: deliveries([worker.log()], TASK).total() == len(adds),
                    20,
                    interval=0.05,
                    what="the adds to be prefetched",
                )
                assert sum(successes([worker.log()], TASK).values()) == 0
                stack.redis.process.send_signal(signal.SIGKILL)
                stack.redis.process.wait(10)
                time.sleep(2)
                stack.redis.start()
                started = time.monotonic()
                body = wait_all(api, adds + sleeps, {"completed"}, 60, "the prefetched adds")
                back_after = time.monotonic() - started
            print(f"\nprefetched messages: completed {back_after:.1f} s after the restart")
            assert [body[task_id]["result"] for task_id in adds] == [1, 2, 3, 4]
            # From the restore on reconnect, not after the visibility timeout (90 s).
            assert back_after < 30, back_after
            log = worker.log()
            assert all(count == 1 for count in successes([log], TASK).values()), log[-3000:]
            assert "Unrecoverable error" not in log
            wait_until(lambda: unacked_count(stack) == 0, 10, what="the acks")
        finally:
            stop_quietly(worker)


@dataclass(eq=False)
class _Started:
    """What `running_delivery_tags` reads of a Celery request that a pool process started."""

    message: Any
    task: Any = None
    acknowledged: bool = False

    def __post_init__(self) -> None:
        self.task = type("Task", (), {"acks_late": True})()


@pytest.mark.timeout(60)
def test_owed_restore_skips_a_message_started_meanwhile(tmp_path: Path) -> None:
    """The restore a lost connection owes puts back what has not started, nothing else.

    Two messages delivered; Redis dies; closing the channel cannot restore them, so both are
    owed. Meanwhile the second was handed to a pool process and started (Celery writes a
    request to a child before the loss and the child accepts it after): its ack will remove
    it, so the owed restore must leave it, or it would run twice.
    """
    server = RedisServer(data_dir=tmp_path / "redis").start()
    started: _Started | None = None
    broker_transport.OWED_RESTORES.clear()
    try:
        redis.Redis.from_url(server.url(0)).config_set("appendfsync", "always")
        got: list[Any] = []
        conn: Any = Connection(server.url(0), transport=TRANSPORT)  # type: ignore[no-untyped-call]
        channel = conn.channel()
        channel.queue_declare("tasks")
        for n in range(2):
            channel.basic_publish(channel.prepare_message(f"message {n}"), "", "tasks")
        channel.basic_consume("tasks", False, got.append, "ack")
        while len(got) < 2:
            conn.drain_events(timeout=5)
        tags = [message.delivery_tag for message in got]
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        with contextlib.suppress(redis.ConnectionError):
            channel.close()
        assert list(broker_transport.OWED_RESTORES) == tags
        started = _Started(got[1])
        state.active_requests.add(started)
        server.start()
        client = redis.Redis.from_url(server.url(0))
        assert client.hlen("unacked") == 2  # the AOF kept both copies
        with Connection(server.url(0), transport=TRANSPORT) as again:  # type: ignore[no-untyped-call]
            consumer = again.channel()
            consumer.basic_consume("tasks", False, got.append, "ack")
            with contextlib.suppress(TimeoutError, OSError):
                for _ in range(3):
                    again.drain_events(timeout=1)
        assert not broker_transport.OWED_RESTORES
        # The first came back and was delivered again; the started one was left for its ack.
        assert [message.delivery_tag for message in got[2:]] == [tags[0]]
        assert client.hexists("unacked", tags[1])
        with contextlib.suppress(Exception):
            conn.release()
    finally:
        if started is not None:
            state.active_requests.discard(started)
        broker_transport.OWED_RESTORES.clear()
        server.stop()
