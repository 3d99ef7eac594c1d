"""A master that refuses writes for want of replicas is, to the worker, a master that is away.

With `min-replicas-to-write` (what closes most of the asynchronous-replication window, see
docs/redis-sentinel.md) a master with too few current replicas answers every write, BRPOP
included, `NOREPLICAS Not enough good replicas to write.` That is a ResponseError, which
Celery's consumer treats as unrecoverable: the worker exited (`Unrecoverable error:
server:ResponseError`, kombu/transport/redis.py:1479 `_brpop_read`) and the result backend
did not retry the write (celery/backends/redis.py:766 retries connection errors only).

Raised as a ConnectionError instead (after dropping the connection, as redis-py does for a
demoted master's READONLY), the worker reconnects with its usual backoff and the backend
retries, until the replicas are back. Upstream fix: kombu and Celery should treat NOREPLICAS
as transient.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError, ResponseError
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from trustcard.redis_clients.master_switch import FollowsMasterSwitch

WRITE_REFUSALS = ("NOREPLICAS",)


class _WriteRefusalIsConnectionLoss:
    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            if not str(exc).startswith(WRITE_REFUSALS):
                raise
            self.disconnect()  # type: ignore[attr-defined]
            raise ConnectionError(f"the master refuses writes: {exc}") from exc


class SentinelMasterConnection(
    _WriteRefusalIsConnectionLoss, FollowsMasterSwitch, SentinelManagedConnection
):
    """redis-py's Sentinel-managed connection, NOREPLICAS raised as a lost connection; it
    follows a master switch at once (redis_clients.master_switch)."""


class SentinelMasterSSLConnection(
    _WriteRefusalIsConnectionLoss, FollowsMasterSwitch, SentinelManagedSSLConnection
):
    """The same over TLS."""
