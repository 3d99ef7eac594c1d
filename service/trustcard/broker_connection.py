"""kombu's broker connection, made to survive a Redis outage with a task running.

kombu 5.7 + Celery 5.7 crash a worker whose connection is lost while one task runs and a
pool slot is free (`Unrecoverable error: AttributeError("'NoneType' object has no attribute
'hostname'")`). The chain, on the installed versions (docs/upstream-redis-outages.md):

1. celery/worker/consumer/consumer.py:476 calls `connection.collect()`. The Redis transport
   has no `_collect`, so kombu/connection.py:412 closes the default channel, the consumer's.
2. That channel waits in BRPOP (a free slot): kombu/transport/redis.py:1894 reads the pending
   reply first, which raises ConnectionError, swallowed by kombu/connection.py:404. The
   channel is left open, its running task's message still in its QoS.
3. collect() then detaches the transport, kombu/connection.py:429 `transport.client = None`,
   but keeps `_default_channel`.
4. consumer.py:487 `connection.close()` closes that channel again; restoring the running
   task's message (kombu/transport/redis.py:494) builds a new pool from
   `self.connection.client.hostname` (redis.py:1959) -> AttributeError, which is not a
   connection error, so it ends the worker.

Here collect() forgets a default channel it could not close, without I/O: the message stays
in Redis's `unacked` hash (it is not lost) and comes back as for any lost connection.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery.app.amqp import AMQP
from kombu.connection import Connection

log = logging.getLogger(__name__)


def forget_channel(channel: Any) -> None:
    """Mark a half-closed channel closed without talking to the broker.

    Cancels its QoS's exit-time restore too (it would meet the same detached transport);
    its sockets are closed locally.
    """
    qos = channel.__dict__.get("_qos")
    if qos is not None:
        qos._on_collect.cancel()
    channel.closed = True
    with contextlib.suppress(Exception):
        channel._disconnect_pools()


class BrokerConnection(Connection):
    """kombu's Connection whose collect() leaves nothing a later close() could trip on."""

    def collect(self, socket_timeout: float | None = None) -> None:
        channel = self._default_channel
        super().collect(socket_timeout)  # type: ignore[no-untyped-call]
        # The transport is detached now (client None): closing this channel again would
        # rebuild a pool from it. Whatever it did not close stays so.
        self._default_channel = None
        if channel is not None and not channel.closed:
            log.info("broker channel left half-closed by the lost connection: dropped")
            forget_channel(channel)


class BrokerAMQP(AMQP):  # type: ignore[misc]
    """Celery's AMQP helper with our Connection class (the worker's and the publishers')."""

    Connection = BrokerConnection
