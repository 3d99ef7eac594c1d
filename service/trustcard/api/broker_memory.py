"""Refuse submissions before the broker's Redis is full, so workers keep room to drain it.

At `maxmemory` with `noeviction` Redis refuses every write: a worker could then pop a task but
not store its result (nor its unacked copy), and one starting then adds its own connections'
memory first. Measured (tests/integration/test_redis_eviction.py, 3 MB over the baseline):
filling to the hard limit left a new worker 273 of 1,950 tasks it ran but could not record.
So the API stops accepting at REDIS_MEMORY_HIGH_WATERMARK of maxmemory (503 naming the broker
as full; /health degraded) and the rest stays for workers' results and bookkeeping.

INFO memory is read at most every CHECK_INTERVAL_SECONDS, by the submission that finds the
last reading stale (others wait for it or use it); a Redis without maxmemory is never "full",
and one refusing INFO to our user is not watched (its own OOM refusal still answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 0.5


class BrokerMemory:
    """The last reading of the broker's memory against its maxmemory."""

    def __init__(self, watermark: float, interval: float = CHECK_INTERVAL_SECONDS) -> None:
        self.watermark = watermark
        self.interval = interval
        self._full: str | None = None
        self._checked = float("-inf")
        self._lock = asyncio.Lock()

    async def full(self, client: Redis) -> str | None:
        """Why new submissions must wait (the broker is nearly full), or None.

        Connection errors propagate: the caller's guard turns them into a 503 anyway.
        """
        if self.watermark >= 1 or time.monotonic() - self._checked < self.interval:
            return self._full
        async with self._lock:
            if time.monotonic() - self._checked >= self.interval:
                self._checked = time.monotonic()
                try:
                    self._full = self._judge(await client.info("memory"))
                except ResponseError as exc:  # INFO refused (ACL): Redis's own OOM still answers
                    log.warning("broker memory not watched: INFO memory refused (%s)", exc)
                    self.watermark = 1.0
                    self._full = None
        return self._full

    def _judge(self, memory: dict[str, object]) -> str | None:
        limit = int(str(memory.get("maxmemory", 0)))
        if not limit:
            return None
        # What Redis compares with maxmemory: replication and AOF buffers do not count.
        used = int(str(memory.get("used_memory", 0))) - int(
            str(memory.get("mem_not_counted_for_evict", 0))
        )
        if used < self.watermark * limit:
            return None
        return (
            f"full: {used} of maxmemory {limit} bytes used (new submissions stop at "
            f"{self.watermark:.0%}, the rest is kept for workers to drain the queue)"
        )
