"""Which Redis failures prove a submission was not sent (503 "not queued") and which do not."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from trustcard.api.task_queue import failed_to_connect
from trustcard.local.redis_server import free_port


def test_a_refused_connection_sent_nothing() -> None:
    async def refused() -> BaseException:
        client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=1)
        try:
            await client.ping()
        except RedisConnectionError as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("nothing listens there, the PING must fail")

    exc = asyncio.run(refused())
    assert "connecting to" in str(exc)
    assert failed_to_connect(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RedisConnectionError("Connection closed by server."),
        RedisConnectionError("Error while reading from 127.0.0.1:6379 : (104, 'reset')"),
        RedisTimeoutError("Timeout reading from 127.0.0.1:6379"),
        OSError("broken pipe"),
    ],
)
def test_a_failure_after_connecting_may_have_sent_the_write(exc: BaseException) -> None:
    assert not failed_to_connect(exc)


def test_a_connect_timeout_sent_nothing() -> None:
    assert failed_to_connect(RedisTimeoutError("Timeout connecting to server"))
