"""Publish task messages from the event loop: Celery builds them, asyncio Redis sends them.

`Celery.send_task` does two things: it builds the message (routing, headers, signals such as
the tracing context and the publish-time stamp, kombu's envelope) and it runs one blocking
LPUSH. The API used to run all of it on publisher threads, paying a thread hop, GIL contention
with the event loop and a kombu client per publish on every submission.

Here kombu's own publish-batch hook (`Producer.batch()`, kombu >= 5.7) collects the transport's
final Redis commands instead of running them, and the API's asyncio client runs them. The
message bytes are exactly those kombu would have written. Anything this path cannot capture
without I/O (a non-direct exchange, a key prefix, an older kombu) uses the threaded path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from celery import Celery
from redis.asyncio import Redis

log = logging.getLogger(__name__)

Command = tuple[str, tuple[Any, ...]]
T = TypeVar("T")


class _Uncapturable(Exception):
    """This message would need broker I/O to route (an exchange lookup): use the thread."""


class _CapturedCommands:
    """kombu's publish-batch protocol, keeping the Redis commands instead of running them."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.commands: list[Command] = []

    def publish(self, message: Any, **kwargs: Any) -> None:
        if kwargs.get("exchange"):
            # A named exchange is routed by reading its bindings from Redis (a round trip).
            raise _Uncapturable(f"exchange {kwargs['exchange']!r}")
        self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))

    def flush(self) -> None:
        """Nothing to do: the caller runs `commands` on its asyncio client."""

    def discard(self) -> None:
        self.commands.clear()

    def close(self) -> None:
        """Nothing held."""


class _DroppedResult:
    """What send_task returns from a capture: nobody reads it (send_task sets `.ignored`)."""

    __slots__ = ("ignored", "task_id")

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id


OnThread = Callable[[Callable[[], T]], Awaitable[T]]


class LoopPublisher:
    """send_task without blocking I/O on the event loop; one per API process.

    The first publish runs on a thread, as kombu's own: it opens the channel, declares the
    queue and LPUSHes (I/O). After that, building a message does no I/O, so it runs on the
    loop and only the LPUSH is awaited.
    """

    def __init__(self, celery: Celery, broker: Redis) -> None:
        self.celery = celery
        self.broker = broker
        self._producer: Any = None
        self._session: _CapturedCommands | None = None
        self._threaded_only = False
        # Publisher threads that find no channel yet open one at a time.
        self._opening = threading.Lock()

    async def send_task(
        self,
        name: str,
        task_id: str,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        on_thread: OnThread[Any],
    ) -> None:
        """Publish one task; raises what redis-py or kombu raise when the broker fails."""
        commands = self.capture(name, task_id, args, kwargs)
        if commands is None:
            await on_thread(lambda: self._publish_on_thread(name, task_id, args, kwargs))
            return
        await self.execute(commands)

    def capture(
        self, name: str, task_id: str, args: list[Any] | None, kwargs: dict[str, Any] | None
    ) -> list[Command] | None:
        """kombu's Redis commands for this message; None when it must be published on a thread.

        (The first publish per process, or a message that needs broker I/O to be routed.)
        """
        producer = self._producer
        if producer is None or self._threaded_only:
            return None
        try:
            return self._capture(producer, name, task_id, args, kwargs)
        except _Uncapturable as exc:
            log.info("publishing %s on a thread: %s", name, exc)
            return None

    def _send(
        self,
        name: str,
        task_id: str,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        producer: Any = None,
    ) -> None:
        """Celery's own blocking publish (its producer pool unless `producer` is given)."""
        self.celery.send_task(name, args=args, kwargs=kwargs, task_id=task_id, producer=producer)

    def _publish_on_thread(
        self, name: str, task_id: str, args: list[Any] | None, kwargs: dict[str, Any] | None
    ) -> None:
        """Publish as kombu does; the first call also opens the channel later captures use."""
        with self._opening:
            if self._producer is None and not self._threaded_only:
                self._open_with(name, task_id, args, kwargs)
                return
        self._send(name, task_id, args, kwargs)

    def _open_with(
        self, name: str, task_id: str, args: list[Any] | None, kwargs: dict[str, Any] | None
    ) -> None:
        connection = self.celery.connection_for_write()
        try:
            channel: Any = connection.default_channel
            producer = self.celery.amqp.Producer(channel, auto_declare=False)
            # The first message is kombu's own publish: it declares the queue on this channel.
            self._send(name, task_id, args, kwargs, producer=producer)
        except BaseException:
            # Broker down: the next publish opens a fresh connection.
            connection.release()
            raise
        if getattr(channel, "global_keyprefix", None) or not hasattr(producer, "batch"):
            # kombu < 5.7 has no batch hook; a key prefix is applied by kombu's own client.
            log.info("publishing on threads: kombu cannot hand over its Redis commands here")
            connection.release()
            self._threaded_only = True
            return
        # kombu's batch asks the channel for a session: hand it the collector of the capture.
        channel.create_publish_batch = self._current_session
        self._producer = producer

    def _current_session(self, max_size: int) -> _CapturedCommands:
        assert self._session is not None, "kombu asked for a batch outside _capture"
        return self._session

    def _capture(
        self,
        producer: Any,
        name: str,
        task_id: str,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
    ) -> list[Command]:
        """Run send_task up to where kombu would talk to Redis; its commands instead."""
        session = self._session = _CapturedCommands(producer.channel)
        try:
            with producer.batch():
                self.celery.send_task(
                    name,
                    args=args,
                    kwargs=kwargs,
                    task_id=task_id,
                    producer=producer,
                    # The first publish declared the queue on this channel; kombu would look it
                    # up in its cache again (binding and copying the Queue: ~5 % of a submission).
                    declare=[],
                    # Nothing to retry: capturing does no I/O. (kombu's retry wrapper, a closure
                    # and a context manager per publish, is not part of the message.)
                    retry=False,
                    # The AsyncResult send_task returns is dropped; building and finalising one
                    # (its __del__ asks the backend to forget it) cost ~2 % of a submission.
                    result_cls=_DroppedResult,
                )
        finally:
            self._session = None
        return session.commands

    async def execute(self, commands: list[Command]) -> None:
        """Send captured commands on the API's asyncio broker client."""
        if len(commands) == 1:
            command, args = commands[0]
            await getattr(self.broker, command)(*args)
            return
        async with self.broker.pipeline(transaction=False) as pipe:
            for command, args in commands:
                getattr(pipe, command)(*args)
            await pipe.execute()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.connection.release()
            self._producer = None
