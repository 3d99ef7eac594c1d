"""Pub/sub connections for long-polls (GET /tasks/{id}?wait=), kept open between waits.

redis-py's PubSub.aclose() disconnects, so every wait used to open a TCP connection and redo
the RESP3 handshake (HELLO, CLIENT SETINFO) before its SUBSCRIBE: round trips between the
submission and the moment the API can hear the result. A finished wait hands its PubSub back;
a background task unsubscribes it (reading until Redis confirms, so no stale message is left
on it) and keeps it for the next wait. A wait that failed or was cancelled closes its PubSub.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Idle subscriber connections kept per API process (each is one Redis client connection).
MAX_IDLE = 16


class SubscriberPool:
    """PubSub objects of one client, reused by successive long-polls."""

    def __init__(self, client: Redis, limit_seconds: float, max_idle: int = MAX_IDLE) -> None:
        self.client = client
        self.limit_seconds = limit_seconds
        self.max_idle = max_idle
        self._idle: list[PubSub] = []
        self._background: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def acquire(self) -> PubSub:
        """An unsubscribed PubSub: a kept one (connected) or a new one (connects on use)."""
        return self._idle.pop() if self._idle else self.client.pubsub()

    def release(self, pubsub: PubSub) -> None:
        """Hand back after a wait that ended normally; the caller does not wait for the clean-up."""
        if len(self._idle) + len(self._background) < self.max_idle and pubsub.connection:
            self._in_background(self._recycle(pubsub))
        else:
            self._in_background(self._close(pubsub))

    def discard(self, pubsub: PubSub) -> None:
        """Close after a failed or cancelled wait: its connection state is unknown."""
        self._in_background(self._close(pubsub))

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        idle, self._idle = self._idle, []
        for pubsub in idle:
            await self._close(pubsub)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recycle(self, pubsub: PubSub) -> None:
        try:
            async with asyncio.timeout(self.limit_seconds):
                await pubsub.unsubscribe()
                # Until Redis confirms, messages of the old channel may still arrive: drop them.
                while pubsub.subscribed:
                    await pubsub.get_message(timeout=self.limit_seconds)
        except (RedisError, OSError, TimeoutError):
            await self._close(pubsub)
            return
        self._idle.append(pubsub)

    async def _close(self, pubsub: PubSub) -> None:
        try:
            async with asyncio.timeout(self.limit_seconds):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        except (RedisError, OSError, TimeoutError):
            log.debug("could not close a result subscription cleanly")
