"""Long-poll subscriber connections are reused between waits, without stale messages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis

from tests.stack import ServiceStack
from trustcard.api.result_subscriptions import SubscriberPool
from trustcard.local.redis_server import RedisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    running = RedisServer(data_dir=tmp_path_factory.mktemp("subscriptions")).start()
    yield running
    running.stop()


async def _settle(pool: SubscriberPool) -> None:
    """Let the pool's background clean-up finish."""
    for _ in range(200):
        if not pool._background:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("clean-up did not finish")


def test_a_released_subscriber_is_reused_unsubscribed_without_stale_messages(
    server: RedisServer,
) -> None:
    async def scenario() -> None:
        client = Redis.from_url(server.url(1))
        publisher = Redis.from_url(server.url(1))
        pool = SubscriberPool(client, limit_seconds=5)
        try:
            first = pool.acquire()
            await first.subscribe("celery-task-meta-a")
            await first.get_message(timeout=1)  # the subscribe confirmation
            connection = first.connection
            # Published after the wait ended, never read by it.
            assert await publisher.publish("celery-task-meta-a", b"late") == 1
            pool.release(first)
            await _settle(pool)
            assert pool.idle == 1

            second = pool.acquire()
            assert second is first
            assert second.connection is connection  # no reconnect, no handshake
            assert not second.subscribed
            # The old channel no longer reaches it; the new one does, and only that.
            assert await publisher.publish("celery-task-meta-a", b"old") == 0
            await second.subscribe("celery-task-meta-b")
            # Publish only once Redis has confirmed the subscription (another connection's
            # PUBLISH may otherwise be served first and reach nobody).
            confirmation = await second.get_message(timeout=5)
            assert confirmation is not None
            assert (confirmation["type"], confirmation["channel"]) == (
                "subscribe",
                b"celery-task-meta-b",
            )
            assert await publisher.publish("celery-task-meta-b", b"new") == 1
            message = await second.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None
            assert (message["channel"], message["data"]) == (b"celery-task-meta-b", b"new")
            pool.discard(second)
            await _settle(pool)
            assert second.connection is None
            assert pool.idle == 0
        finally:
            await pool.aclose()
            await client.aclose()
            await publisher.aclose()

    asyncio.run(scenario())


def test_the_pool_keeps_at_most_max_idle(server: RedisServer) -> None:
    async def scenario() -> None:
        client = Redis.from_url(server.url(1))
        pool = SubscriberPool(client, limit_seconds=5, max_idle=2)
        try:
            taken = [pool.acquire() for _ in range(4)]
            for index, pubsub in enumerate(taken):
                await pubsub.subscribe(f"celery-task-meta-{index}")
            for pubsub in taken:
                pool.release(pubsub)
            await _settle(pool)
            assert pool.idle == 2
            assert sum(1 for p in taken if p.connection is None) == 2
        finally:
            await pool.aclose()
            await client.aclose()

    asyncio.run(scenario())


def test_long_polls_through_the_api_reuse_their_connections(tmp_path: Path) -> None:
    """20 sequential ?wait= on a finished task: not one new Redis connection each."""
    stack = ServiceStack(tmp_path).start()
    try:
        assert stack.redis is not None
        admin = redis.Redis.from_url(stack.redis.url(0))
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            task_id = client.post("/tasks/test/add", params={"x": 2, "y": 3}).json()["task_id"]
            body = client.get(f"/tasks/{task_id}", params={"wait": 20}).json()
            assert body["status"] == "completed"
            before = int(admin.info("stats")["total_connections_received"])
            for _ in range(20):
                body = client.get(f"/tasks/{task_id}", params={"wait": 5}).json()
                assert body["result"] == 5
            opened = int(admin.info("stats")["total_connections_received"]) - before
        admin.close()
        assert opened <= 3, f"{opened} new Redis connections for 20 long-polls"
    finally:
        stack.stop()
