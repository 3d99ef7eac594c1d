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

Here the transport keeps its client when the connection detaches it: a channel left
half-closed can still build a pool, so finishing its close (restoring the running task's
message) fails with ConnectionError while Redis is down, which Celery handles, and succeeds
once it is back; an ack of a task that kept running goes out on a fresh connection too.

With `worker_cancel_long_running_tasks_on_connection_loss` off, the tasks running at the loss
keep running, and closing the lost channel must not requeue their messages (they would run a
second time, in parallel): those stay in Redis's `unacked` hash until the task acks them on a
fresh connection. Messages not started yet are requeued at once, as kombu does.
docs/reliability.md ("A Redis blip and running tasks") has the measurements behind the choice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from celery.app.amqp import AMQP
from celery.worker import state
from kombu.connection import Connection


def running_delivery_tags() -> set[str]:
    """Delivery tags of the tasks this worker runs now that are still to be acked."""
    return {
        request.message.delivery_tag
        for request in tuple(state.active_requests)
        if request.task.acks_late and not request.acknowledged
    }


class BrokerConnection(Connection):
    """kombu's Connection whose transport stays usable by channels it leaves half-closed."""

    # Set per app by BrokerAMQP: tasks keep running across a lost connection.
    keep_running_tasks = False

    def collect(self, socket_timeout: float | None = None) -> None:
        with self._running_tasks_kept():
            super().collect(socket_timeout)  # type: ignore[no-untyped-call]

    def _close(self) -> None:
        with self._running_tasks_kept():
            super()._close()  # type: ignore[no-untyped-call]

    @contextmanager
    def _running_tasks_kept(self) -> Iterator[None]:
        """Hide running tasks' messages from the channel's restore-on-close, then put back.

        Put back, so the task's ack (or a requeue if its pool process dies) still finds them.
        """
        channel: Any = self._default_channel
        qos = channel.__dict__.get("_qos") if channel is not None else None
        delivered = getattr(qos, "_delivered", None)
        if not self.keep_running_tasks or not delivered:
            yield
            return
        held = {tag: delivered.pop(tag) for tag in running_delivery_tags() if tag in delivered}
        transport = channel.connection
        try:
            yield
        finally:
            for tag, message in held.items():
                delivered.setdefault(tag, message)
            if held and channel.connection is None:
                # Closing dropped the channel's transport; its acks need it for a new pool.
                channel.connection = transport

    def _do_close_transport(self) -> None:
        transport = self._transport
        super()._do_close_transport()  # type: ignore[no-untyped-call]
        if transport is not None:
            # kombu drops this back-reference to break a cycle (the GC handles cycles); its
            # channels read the server's address from it when they need a new pool.
            transport.client = self


class BrokerAMQP(AMQP):  # type: ignore[misc]
    """Celery's AMQP helper with our Connection class (the worker's and the publishers')."""

    @cached_property
    def Connection(self) -> type[BrokerConnection]:
        keep = not self.app.conf.worker_cancel_long_running_tasks_on_connection_loss
        return type("BrokerConnection", (BrokerConnection,), {"keep_running_tasks": keep})
