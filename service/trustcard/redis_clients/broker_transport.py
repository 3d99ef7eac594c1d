"""kombu's Redis transport, able to start and consume while Redis is full (maxmemory).

At maxmemory with `noeviction` Redis refuses every write that may grow memory (OOM), even one
that would not. A new worker had to write before consuming a single message, so it could not
start against a full Redis (exit: `Unrecoverable error: OutOfMemoryError`; on Kubernetes a
CrashLoopBackOff that never drains the queue):
- kombu/transport/redis.py:749 `on_poll_init` -> :532 `QoS.restore_visible` takes its lock
  with SET NX PX (`Mutex`, :285) when the consumer connects;
- `_queue_bind` (:1732) SADDs the binding of every queue it consumes (the pidbox's too);
- `QoS.append` (:486) stores the unacked copy of a message just popped (BRPOP) in a MULTI
  pipeline: refused, the message was lost and the worker exited; acks (:499) likewise;
- every queue declare reads the queue's size (virtual/base.py:548 -> redis.py:1656 `_size`)
  in a MULTI pipeline, and Redis refuses any command queued in a MULTI while it is full;
- Celery's mingle step (celery/worker/consumer/mingle.py) broadcasts `hello` through a reply
  queue it binds the same way (our worker runs --without-mingle, see cli.worker_argv).
Celery treats a ResponseError as unrecoverable. Here both writes tolerate OOM: restoring
unacked messages is retried on the next tick anyway, and a binding is only read to route
publishes to direct exchanges, which the publishers bound already (fanout bindings, the pidbox
ones, are not read at all: the local `_fanout_queues` entry is set before the SADD). Consuming
frees memory (BRPOP), so the refused writes succeed again once the worker drains a little.
Upstream fix: kombu should treat OOM on these housekeeping writes as transient.
"""

from __future__ import annotations

import logging
from collections import deque
from queue import Empty
from time import monotonic
from typing import Any
from uuid import uuid4

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from trustcard.redis_clients.broker_connection import running_delivery_tags
from trustcard.redis_clients.reliable_pop import (
    IDLE_WAIT_KEY,
    LOST_POPS,
    RECEIPT_KEY_PREFIX,
    Pop,
    PopAttempt,
    idle_wait_command,
    pop,
    popped_tag,
)
from trustcard.redis_clients.write_refusal import (
    SentinelMasterConnection,
    SentinelMasterSSLConnection,
)

log = logging.getLogger(__name__)

# Delivery tags of messages delivered to this process and not started, whose restore failed
# when their channel closed with the connection lost; the next connected channel restores them.
OWED_RESTORES: deque[str] = deque()
_CONNECTION_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


class OutOfMemoryTolerantQoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        # Tags whose unacked copy the pop script stored already (reliable_pop).
        self.recorded_by_pop: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        """Keep the unacked copy; when Redis is full, run the task without it (logged).

        The pop script stores the copy itself; only a message it could not record (Redis
        full, or a message it could not read) is written here, as kombu does. The message
        is already off the queue: raising here lost it and ended the worker. Without the
        copy only a crash while it runs loses it; each pop frees memory, so the copies are
        kept again after the first few pops.
        """
        if delivery_tag in self.recorded_by_pop:
            self.recorded_by_pop.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]
            return
        try:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
        except OutOfMemoryError:
            log.warning(
                "Redis is full (maxmemory): message %s runs without its unacked copy", delivery_tag
            )
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def restore_unacked(self, client: Any = None) -> None:
        """kombu's restore on close, owed to the next connection when this one is lost.

        Celery drops the requests it holds and has not started when the broker connection is
        lost (celery/worker/consumer/consumer.py `on_close`); kombu puts their messages back
        when it closes the channel, once (virtual/base.py `close` -> `restore_unacked_once`).
        With Redis down that restore fails and kombu never tries again: the messages waited
        in `unacked` for the visibility timeout (600 s by default) while the API said
        `pending`. Upstream fix: kombu should retry the restore on its next connection.
        """
        left = list(self._delivered)
        try:
            with self.channel.conn_or_acquire(client) as connected:
                while left:
                    self.restore_by_tag(left[0], client=connected)  # type: ignore[no-untyped-call]
                    left.pop(0)
        except _CONNECTION_LOST:
            OWED_RESTORES.extend(tag for tag in left if tag not in OWED_RESTORES)
            log.warning(
                "%d delivered message(s) not started go back to their queue once Redis answers",
                len(left),
            )
            raise
        self._delivered.clear()

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """kombu's, outside MULTI when it runs on its own: ZREM and HDEL free memory, and
        Redis accepts them when full, but not queued in a MULTI (the ack then failed)."""
        if pipe is None:
            with self.channel.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
        return pipe.zrem(self.unacked_index_key, delivery_tag).hdel(self.unacked_key, delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().restore_visible(*args, **kwargs)  # type: ignore[no-untyped-call]
        except OutOfMemoryError:
            log.warning("Redis is full (maxmemory): unacked messages are restored on a later tick")
            return None


class OutOfMemoryTolerantChannel(kombu_redis.Channel):
    """kombu's channel with a reliable pop (reliable_pop) and the OOM tolerance above.

    kombu's event loop integration stays: the poller still calls `_brpop_start` to send a
    command on the consumer connection and `_brpop_read` when its socket is readable. The
    command is the pop script, or, after an empty pop, an idle wait that consumes nothing.
    """

    QoS = OutOfMemoryTolerantQoS
    # Seconds an idle consumer asks the server to wait between two pops. Redis ends blocking
    # waits on its cron, so at its default hz 10 a wait lasts ~100 ms: ~10 pops a second per
    # idle worker, and up to ~100 ms more for a task sent to an idle worker
    # (docs/upstream-redis-outages.md, section 6, has the measured cost).
    idle_poll_interval = 0.05
    # The command in flight is the idle wait (its reply carries no message).
    _idle_wait_pending = False
    # The last pop found every queue empty: wait before the next one.
    _last_pop_empty = False
    # The pop sent and not answered yet.
    _pop_in_flight: PopAttempt | None = None
    _receipt_key: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Queues consumed with no_ack (e.g. a control reply queue): no unacked copy, as kombu.
        self._no_ack_queues: set[str] = set()
        # Whether the running basic_get stores an unacked copy.
        self._get_records = True
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)  # type: ignore[no-untyped-call]

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        self._get_records = not no_ack
        try:
            return super().basic_get(queue, no_ack, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            self._get_records = True

    def _prefixed(self, key: str) -> str:
        return f"{self.global_keyprefix or ''}{key}"

    def _pop_keys(self, queues: list[str], record: bool = True) -> list[tuple[str, bool]]:
        """BRPOP's key order (every queue's highest priority first, queues in cycle order),
        each with whether its messages get an unacked copy."""
        return [
            (
                self._prefixed(self._q_for_pri(queue, priority)),  # type: ignore[no-untyped-call]
                record and queue not in self._no_ack_queues,
            )
            for priority in self.priority_steps
            for queue in queues
        ]

    def _pop(self, queues: list[str], record: bool = True) -> Pop:
        if self._receipt_key is None:
            self._receipt_key = self._prefixed(f"{RECEIPT_KEY_PREFIX}{uuid4().hex}")
        return pop(
            self._pop_keys(queues, record),
            self._prefixed(self.unacked_key),
            self._prefixed(self.unacked_index_key),
            self._receipt_key,
            float(self.visibility_timeout),
        )

    def _resolve_lost_pops(self) -> None:
        """Put back at once what a pop whose reply was lost took (else: visibility timeout)."""
        try:
            with self.conn_or_acquire() as client:
                while LOST_POPS:
                    attempt = LOST_POPS[0]
                    tag = popped_tag(client.execute_command("GET", attempt.receipt_key), attempt)
                    if tag is not None:
                        log.warning(
                            "the reply to a pop was lost with its connection: "
                            "message %s goes back to its queue",
                            tag,
                        )
                        self.qos.restore_by_tag(tag, client)
                    LOST_POPS.popleft()
        except self.connection_errors:
            log.debug("lost pops not resolved yet (connection error); retried", exc_info=True)

    def _restore_owed(self) -> None:
        """Put back the messages a lost connection's channel could not restore on close."""
        try:
            with self.conn_or_acquire() as client:
                # One handed to a pool process just before the loss has started since: its
                # ack removes it; queued again, it would run twice.
                running = running_delivery_tags()
                while OWED_RESTORES:
                    tag = OWED_RESTORES[0]
                    if tag not in running:
                        self.qos.restore_by_tag(tag, client)
                        log.info("message %s (delivered before the loss) is queued again", tag)
                    OWED_RESTORES.popleft()
        except self.connection_errors:
            log.debug("owed restores not done yet (connection error); retried", exc_info=True)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._pop_in_flight is not None:
            # Sent and never read: its connection was dropped (a health check, a disconnect).
            LOST_POPS.append(self._pop_in_flight)
            self._pop_in_flight = None
        if LOST_POPS:
            self._resolve_lost_pops()
        if OWED_RESTORES:
            self._restore_owed()
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if self._last_pop_empty:
            command = idle_wait_command(self._prefixed(IDLE_WAIT_KEY), self.idle_poll_interval)
        else:
            next_pop = self._pop(queues)
            command = next_pop.command
            self._pop_in_flight = next_pop.attempt
        self._idle_wait_pending = self._last_pop_empty
        self._last_pop_empty = False
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        idle_wait, self._idle_wait_pending = self._idle_wait_pending, False
        attempt, self._pop_in_flight = self._pop_in_flight, None
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "XREAD" if idle_wait else "EVAL", **options
                )
            except self.connection_errors:
                if attempt is not None:
                    LOST_POPS.append(attempt)
                # As kombu: disconnect, so the next iteration reconnects.
                self.client.connection.disconnect()
                raise
            if idle_wait:
                raise Empty()
            if not reply:
                self._last_pop_empty = True
                raise Empty()
            dest, payload = self._popped(reply)
            self._queue_cycle.rotate(dest)
            self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]

    def _popped(self, reply: list[Any]) -> tuple[str, Any]:
        """The queue and the message of a pop's reply; notes a stored unacked copy."""
        key, item, recorded = reply
        name: str = bytes_to_str(key)  # type: ignore[no-untyped-call]
        queue = name[len(self.global_keyprefix or "") :].rsplit(self.sep, 1)[0]
        payload = loads(bytes_to_str(item))  # type: ignore[no-untyped-call]
        if recorded:
            self.qos.recorded_by_pop.add(payload["properties"]["delivery_tag"])
        return queue, payload

    def close(self) -> None:
        super().close()  # type: ignore[no-untyped-call]
        if self._pop_in_flight is not None:
            # Closed with a pop unanswered (its connection went first): another channel asks.
            LOST_POPS.append(self._pop_in_flight)
            self._pop_in_flight = None

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """kombu's synchronous get (basic_get), through the pop script as well."""
        with self.conn_or_acquire() as client:
            reply = client.execute_command(*self._pop([queue], self._get_records).command)
            self._maybe_update_queues_expire(client, queue)  # type: ignore[no-untyped-call]
        if not reply:
            raise Empty()
        return self._popped(reply)[1]

    def _size(self, queue: str) -> int:
        """kombu's, without MULTI: Redis refuses commands queued in a MULTI when it is full,
        and every queue declare reads the size (so a worker could not declare its queues)."""
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            for priority in self.priority_steps:
                pipe.llen(self._q_for_pri(queue, priority))  # type: ignore[no-untyped-call]
            return sum(size for size in pipe.execute() if isinstance(size, int))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)  # type: ignore[no-untyped-call]
        except OutOfMemoryError:
            log.warning(
                "Redis is full (maxmemory): binding of queue %s to %s not stored", queue, exchange
            )


class Transport(kombu_redis.Transport):
    Channel = OutOfMemoryTolerantChannel


class OutOfMemoryTolerantSentinelChannel(OutOfMemoryTolerantChannel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (master address from the Sentinels) with the tolerance above.

    A master without enough replicas (NOREPLICAS) counts as a lost connection, not as an
    unrecoverable error (see redis_clients.write_refusal).
    """

    connection_class = SentinelMasterConnection
    connection_class_ssl = SentinelMasterSSLConnection  # type: ignore[assignment]


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = OutOfMemoryTolerantSentinelChannel


TRANSPORT = "trustcard.redis_clients.broker_transport:Transport"
SENTINEL_TRANSPORT = "trustcard.redis_clients.broker_transport:SentinelTransport"


def use_for_redis_urls() -> None:
    """redis://, rediss:// and sentinel:// broker URLs get ours, through kombu's alias table.

    Not Celery's `broker_transport` setting: with it kombu names the class in every URL it
    logs (`Cannot connect to trustcard.redis_clients.broker_transport:Transport://...`).
    """
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = TRANSPORT
    # sentinel:// (REDIS_SENTINEL_HOSTS set, see redis_clients.connection.sentinel_url).
    TRANSPORT_ALIASES["sentinel"] = SENTINEL_TRANSPORT
