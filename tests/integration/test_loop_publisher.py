"""The API's event-loop publisher writes what kombu writes, and leaves the loop only once."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.asyncio import Redis

from trustcard.api.broker_publish import LoopPublisher
from trustcard.celery_app import create_celery_app
from trustcard.config import Settings
from trustcard.local.redis_server import RedisServer
from trustcard.observability.worker_metrics import PUBLISHED_AT_HEADER
from trustcard.task_model.names import QUEUE

T = TypeVar("T")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    running = RedisServer(data_dir=tmp_path_factory.mktemp("loop-publisher")).start()
    yield running
    running.stop()


@pytest.fixture
def settings(server: RedisServer) -> Settings:
    client = redis.Redis.from_url(server.url(0))
    client.flushdb()
    client.close()
    return Settings(REDIS_URL=server.url(0), RESULT_BACKEND_URL=server.url(1))


def _queued(url: str) -> list[dict[str, Any]]:
    """The messages on the queue, oldest first, with their bodies decoded."""
    client = redis.Redis.from_url(url)
    try:
        raw = client.lrange(QUEUE, 0, -1)
    finally:
        client.close()
    messages = [json.loads(item) for item in reversed(raw)]
    for message in messages:
        message["body"] = json.loads(base64.b64decode(message["body"]))
    return messages


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    """A message without what differs between any two publishes (tags and timestamps)."""
    headers = {k: v for k, v in message["headers"].items() if k != PUBLISHED_AT_HEADER}
    properties = {k: v for k, v in message["properties"].items() if k != "delivery_tag"}
    return {**message, "headers": headers, "properties": properties}


async def _publish_all(
    celery: Celery, settings: Settings, jobs: list[tuple[str, str, dict[str, Any]]]
) -> list[str]:
    """Publish each job through a LoopPublisher; the ids whose publish left the loop."""
    broker = Redis.from_url(settings.broker_url)
    publisher = LoopPublisher(celery, broker)
    on_thread_calls: list[str] = []
    try:
        for name, task_id, kwargs in jobs:

            async def on_thread(call: Callable[[], T], task_id: str = task_id) -> T:
                on_thread_calls.append(task_id)
                return await asyncio.to_thread(call)

            await publisher.send_task(name, task_id, None, kwargs, on_thread)
    finally:
        publisher.close()
        await broker.aclose()
    return on_thread_calls


def test_messages_are_byte_for_byte_kombus(settings: Settings) -> None:
    """Same envelope, headers, properties and body as Celery's own send_task."""
    celery = create_celery_app(settings)
    jobs = [("test.add", "loop-1", {"x": 1, "y": 2}), ("test.add", "loop-2", {"x": 1, "y": 2})]
    try:
        celery.send_task("test.add", kwargs={"x": 1, "y": 2}, task_id="kombu-1")
        asyncio.run(_publish_all(celery, settings, jobs))
    finally:
        celery.close()

    by_kombu, first, second = _queued(settings.broker_url)
    assert [m["headers"]["id"] for m in (by_kombu, first, second)] == [
        "kombu-1",
        "loop-1",
        "loop-2",
    ]
    for ours in (first, second):
        expected = _comparable(by_kombu)
        expected["headers"] = {**expected["headers"], "id": ours["headers"]["id"]}
        expected["headers"]["root_id"] = ours["headers"]["id"]
        expected["properties"] = {**expected["properties"], "correlation_id": ours["headers"]["id"]}
        if ours is first:
            # Sent on a thread (opening the channel): Celery's reply_to names the sending thread.
            expected["properties"]["reply_to"] = ours["properties"]["reply_to"]
        assert _comparable(ours) == expected
        # The publish-time stamp (a before_task_publish handler) is set on this path too.
        assert isinstance(ours["headers"][PUBLISHED_AT_HEADER], float)
    assert first["body"] == [[], {"x": 1, "y": 2}, by_kombu["body"][2]]


def test_only_the_first_publish_leaves_the_event_loop(settings: Settings) -> None:
    """Opening kombu's channel is blocking I/O (on a thread); every later publish is not."""
    jobs = [("test.add", f"task-{i}", {"x": i, "y": 1}) for i in range(20)]
    celery = create_celery_app(settings)
    try:
        left_the_loop = asyncio.run(_publish_all(celery, settings, jobs))
    finally:
        celery.close()
    assert left_the_loop == ["task-0"]
    queued = _queued(settings.broker_url)
    assert [m["headers"]["id"] for m in queued] == [f"task-{i}" for i in range(20)]
    assert [m["body"][1] for m in queued] == [{"x": i, "y": 1} for i in range(20)]


def test_a_down_broker_raises_instead_of_hanging(tmp_path: Path) -> None:
    """The connection error reaches the caller (the API maps it to 503)."""
    server = RedisServer(data_dir=tmp_path / "short-lived").start()
    settings = Settings(REDIS_URL=server.url(0), RESULT_BACKEND_URL=server.url(1))

    async def publish_after_stop() -> None:
        celery = create_celery_app(settings)
        broker = Redis.from_url(settings.broker_url, socket_connect_timeout=1)
        publisher = LoopPublisher(celery, broker)

        async def on_thread(call: Callable[[], T]) -> T:
            return await asyncio.to_thread(call)

        try:
            await publisher.send_task("test.add", "before", None, {"x": 1, "y": 1}, on_thread)
            server.stop()
            with pytest.raises(redis.ConnectionError):
                await publisher.send_task("test.add", "after", None, {"x": 1, "y": 1}, on_thread)
        finally:
            publisher.close()
            await broker.aclose()
            celery.close()

    try:
        asyncio.run(publish_after_stop())
    finally:
        server.stop()


def test_a_broker_down_at_the_first_publish_is_retried_by_the_next(tmp_path: Path) -> None:
    """The failed opening leaves nothing half-open: once Redis is back, publishing works."""
    server = RedisServer(data_dir=tmp_path / "late", appendonly=False).start()
    server.stop()
    settings = Settings(REDIS_URL=server.url(0), RESULT_BACKEND_URL=server.url(1))

    async def scenario() -> list[str]:
        celery = create_celery_app(settings)
        broker = Redis.from_url(settings.broker_url, socket_connect_timeout=1)
        publisher = LoopPublisher(celery, broker)
        left_the_loop: list[str] = []

        async def on_thread(call: Callable[[], T]) -> T:
            left_the_loop.append("thread")
            return await asyncio.to_thread(call)

        try:
            with pytest.raises(OperationalError):
                await publisher.send_task("test.add", "refused", None, {"x": 1, "y": 1}, on_thread)
            server.start()
            for task_id in ("first", "second"):
                await publisher.send_task("test.add", task_id, None, {"x": 1, "y": 1}, on_thread)
        finally:
            publisher.close()
            await broker.aclose()
            celery.close()
        return left_the_loop

    try:
        # The refused publish and the one that opened the channel ran on threads; not the last.
        assert asyncio.run(scenario()) == ["thread", "thread"]
        assert [m["headers"]["id"] for m in _queued(settings.broker_url)] == ["first", "second"]
    finally:
        server.stop()
