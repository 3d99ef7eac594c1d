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
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from redis.exceptions import OutOfMemoryError

from trustcard.redis_clients.write_refusal import (
    SentinelMasterConnection,
    SentinelMasterSSLConnection,
)

log = logging.getLogger(__name__)


class OutOfMemoryTolerantQoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        """Keep the unacked copy; when Redis is full, run the task without it (logged).

        The message is already popped off the queue (BRPOP): raising here lost it and ended
        the worker. Without the copy only a crash while it runs loses it; each pop frees
        memory, so the copies are kept again after the first few pops.
        """
        try:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
        except OutOfMemoryError:
            log.warning(
                "Redis is full (maxmemory): message %s runs without its unacked copy", delivery_tag
            )
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

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
    QoS = OutOfMemoryTolerantQoS

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
