"""Record and message in one script: both written, kombu's bytes, and the fallback to two writes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from tests.integration.test_loop_publisher import _comparable, _queued
from trustcard.api import task_queue
from trustcard.api.record_and_publish import RecordAndPublish
from trustcard.api.resources import ApiResources, open_resources, redis_client
from trustcard.celery_app import create_celery_app
from trustcard.config import Settings
from trustcard.local.redis_server import RedisServer
from trustcard.task_model.registry import TaskRecord, record_key

TTL = 3600


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    running = RedisServer(data_dir=tmp_path_factory.mktemp("record-and-publish")).start()
    yield running
    running.stop()


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url(0))
    client.flushall()
    yield client
    client.close()


def _submit_all(settings: Settings, count: int) -> tuple[list[TaskRecord], bool, bool]:
    """Submit `count` test.add tasks; the records, and whether the script was on and used."""

    async def scenario() -> tuple[list[TaskRecord], bool, bool]:
        res: ApiResources = open_resources(settings, create_celery_app(settings))
        try:
            assert res.record_and_publish is not None
            records = [
                await task_queue.submit(res, "test.add", kwargs={"x": 1, "y": 2})
                for _ in range(count)
            ]
            return records, res.record_and_publish.enabled, res.record_and_publish.worked
        finally:
            await res.aclose()
            res.celery.close()

    return asyncio.run(scenario())


def _stored_record(server: RedisServer, task_id: str) -> tuple[TaskRecord, int]:
    client = redis.Redis.from_url(server.url(1))
    try:
        raw = client.get(record_key(task_id))
        assert raw is not None, f"no record for {task_id}"
        return TaskRecord.from_json(raw), client.ttl(record_key(task_id))
    finally:
        client.close()


def test_records_and_messages_in_one_script(server: RedisServer, admin: redis.Redis) -> None:
    settings = Settings(
        REDIS_URL=server.url(0), RESULT_BACKEND_URL=server.url(1), RESULT_EXPIRES=TTL
    )
    records, enabled, worked = _submit_all(settings, 5)
    assert enabled
    assert worked
    queued = _queued(settings.broker_url)
    assert [m["headers"]["id"] for m in queued] == [r.task_id for r in records]
    assert [m["body"][1] for m in queued] == [{"x": 1, "y": 2}] * 5
    for record in records:
        stored, ttl = _stored_record(server, record.task_id)
        assert stored == record
        assert 0 < ttl <= TTL
    # The first message went through kombu's own publish (it opens the channel); the others
    # through the script: the same message but for the per-task ids.
    first, *scripted = queued
    for message in scripted:
        expected = _comparable(first)
        task_id = message["headers"]["id"]
        expected["headers"] = {**expected["headers"], "id": task_id, "root_id": task_id}
        expected["properties"] = {
            **expected["properties"],
            "correlation_id": task_id,
            "reply_to": message["properties"]["reply_to"],
        }
        assert _comparable(message) == expected
    # Each write in its own database (the script's SELECTs do not leak into the connection).
    assert admin.keys(record_key("*")) == []
    backend = redis.Redis.from_url(server.url(1))
    try:
        assert backend.dbsize() == len(records)
    finally:
        backend.close()


def test_a_server_that_refuses_scripts_gets_two_writes(
    server: RedisServer, admin: redis.Redis
) -> None:
    admin.acl_setuser(
        "no-scripts",
        enabled=True,
        passwords=["+no-scripts-secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-@scripting"],
    )
    try:
        auth = f"redis://no-scripts:no-scripts-secret@{server.host}:{server.port}"
        settings = Settings(REDIS_URL=f"{auth}/0", RESULT_BACKEND_URL=f"{auth}/1")
        records, enabled, worked = _submit_all(settings, 3)
    finally:
        admin.acl_deluser("no-scripts")
    assert not enabled
    assert not worked
    assert [m["headers"]["id"] for m in _queued(server.url(0))] == [r.task_id for r in records]
    for record in records:
        assert _stored_record(server, record.task_id)[0] == record


def test_only_databases_of_one_server_share_the_script() -> None:
    def combined(broker_url: str, backend_url: str) -> RecordAndPublish | None:
        return RecordAndPublish.for_clients(
            redis_client(Settings(), broker_url, 1), redis_client(Settings(), backend_url, 1)
        )

    same = combined("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/1")
    assert same is not None
    assert (same.broker_db, same.record_db) == (0, 1)
    assert combined("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6391/1") is None
    assert combined("redis://:a@127.0.0.1:6390/0", "redis://:b@127.0.0.1:6390/1") is None
