"""What this process knows of a Sentinel failover, and the connections that act on it.

redis-py (and kombu and Celery through it) asks the Sentinels for the master's address only
when it opens a connection (redis/sentinel.py:59 `_connect_retry`); open connections stay on the
old master until it is demoted, which Sentinel does seconds after it promoted a replica. What
the old master takes meanwhile is flushed when it resyncs as a replica (docs/redis-sentinel.md).

`redis_clients.sentinel_watch` listens to the Sentinels and tells `MASTER_SWITCHES`:
- a failover starts (`+try-failover`, `+failover-state-send-slaveof-noone`): every
  Sentinel-managed connection of the process is cut and new ones are refused (a connection
  error: the API answers 503, the worker reconnects with backoff) until the switch, so
  nothing is written to a master that is about to lose its writes;
- the master switched (`+switch-master`): connections are cut again and new ones go to the
  new master's address for FOLLOW_SECONDS, not to what a Sentinel answers: the leader keeps
  naming the old master in `SENTINEL MASTERS` until its own switch, seconds after the others
  (1-6 s here), and redis-py asks the Sentinel that answered last first.
Connections are cut with `shutdown()` on (a duplicate of) their socket: safe from the
watcher's thread while another thread or an event loop reads on it; that reader sees the
connection closed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.asyncio.sentinel import (
    SentinelManagedSSLConnection as AsyncSentinelManagedSSLConnection,
)
from redis.exceptions import ConnectionError

# New connections wait (refused) at most this long for the switch after a failover starts:
# Sentinel's switch took 1-2 s after the start here; an abort clears it at once.
HOLD_SECONDS = 10.0
# How long new connections go to the switched-to address rather than asking the Sentinels:
# past the leader Sentinel's own switch (6 s after the others here).
FOLLOW_SECONDS = 30.0

Address = tuple[str, int]


@dataclass(frozen=True)
class MasterSwitch:
    """`+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>`."""

    master_name: str
    old: Address
    new: Address


class MasterSwitches:
    """The failover state of one process: holds, followed addresses, live connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held_until: dict[str, float] = {}
        self._followed: dict[str, tuple[Address, float]] = {}
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        # A pool process forked while a watcher thread held the lock would wait on it forever.
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def register(self, connection: Any) -> None:
        with self._lock:
            self._connections.add(connection)

    def hold(self, master_name: str) -> None:
        """A failover of `master_name` starts: cut its connections, refuse new ones."""
        with self._lock:
            self._held_until[master_name] = time.monotonic() + HOLD_SECONDS
        self.cut_connections(master_name)

    def release(self, master_name: str) -> None:
        """The failover was aborted: connections may ask the Sentinels again."""
        with self._lock:
            self._held_until.pop(master_name, None)

    def switched(self, switch: MasterSwitch) -> bool:
        """Follow the new master; False when this switch was already seen (another Sentinel)."""
        now = time.monotonic()
        with self._lock:
            self._held_until.pop(switch.master_name, None)
            followed = self._followed.get(switch.master_name)
            new = (
                followed is None or followed[0] != switch.new or now - followed[1] > FOLLOW_SECONDS
            )
            if new:
                self._followed[switch.master_name] = (switch.new, now)
        # Cut again on every report: a connection opened between two reports may have been
        # given the old address by a Sentinel that had not switched yet.
        self.cut_connections(switch.master_name, avoid=switch.new)
        return new

    def master_address(self, master_name: str) -> Address | None:
        """Where a new connection goes: None = ask the Sentinels; raises during a hold."""
        now = time.monotonic()
        with self._lock:
            held_until = self._held_until.get(master_name, 0.0)
            followed = self._followed.get(master_name)
        if now < held_until:
            raise ConnectionError(f"Redis master {master_name!r} is being switched by Sentinel")
        if followed is not None and now - followed[1] <= FOLLOW_SECONDS:
            return followed[0]
        return None

    def cut_connections(self, master_name: str, avoid: Address | None = None) -> int:
        """Shut down the sockets of the process's connections to `master_name`'s master.

        `avoid`: keep the connections already on that address (the new master).
        """
        with self._lock:
            connections = list(self._connections)
        cut = 0
        for connection in connections:
            pool = getattr(connection, "connection_pool", None)
            if getattr(pool, "service_name", None) != master_name:
                continue
            if avoid is not None and (connection.host, connection.port) == tuple(avoid):
                continue
            sock = _socket_of(connection)
            if sock is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                _shut_down(sock.fileno())
                cut += 1
        return cut


def _shut_down(fileno: int) -> None:
    """shutdown() the connection behind `fileno`, through a duplicate of the descriptor.

    asyncio's (and uvloop's) transport sockets refuse shutdown() themselves; the duplicate
    reaches the same TCP connection, and its owner's next read sees it closed.
    """
    if fileno < 0:
        return
    duplicate = socket.socket(fileno=os.dup(fileno))
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    finally:
        duplicate.close()


def _socket_of(connection: Any) -> Any:
    """The OS socket of a sync (`_sock`) or asyncio (`_writer`) redis-py connection."""
    sock = getattr(connection, "_sock", None)
    if sock is not None:
        return sock
    writer = getattr(connection, "_writer", None)
    return writer.get_extra_info("socket") if writer is not None else None


MASTER_SWITCHES = MasterSwitches()


class FollowsMasterSwitch:
    """A sync Sentinel-managed connection that obeys MASTER_SWITCHES."""

    connection_pool: Any

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        MASTER_SWITCHES.register(self)

    def _connect_retry(self) -> None:
        if getattr(self, "_sock", None) is None and self.connection_pool.is_master:
            address = MASTER_SWITCHES.master_address(self.connection_pool.service_name)
            if address is not None:
                self.connect_to(address)  # type: ignore[attr-defined]
                return
        super()._connect_retry()  # type: ignore[misc]


class AsyncFollowsMasterSwitch:
    """The same for redis.asyncio's Sentinel-managed connection (the API)."""

    connection_pool: Any

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        MASTER_SWITCHES.register(self)

    async def _connect_retry(self) -> None:
        if getattr(self, "_reader", None) is None and self.connection_pool.is_master:
            address = MASTER_SWITCHES.master_address(self.connection_pool.service_name)
            if address is not None:
                await self.connect_to(address)  # type: ignore[attr-defined]
                return
        await super()._connect_retry()  # type: ignore[misc]


class AsyncSentinelMasterConnection(AsyncFollowsMasterSwitch, AsyncSentinelManagedConnection):
    """The API's asyncio connection to the master the Sentinels name."""


class AsyncSentinelMasterSSLConnection(AsyncFollowsMasterSwitch, AsyncSentinelManagedSSLConnection):
    """The same over TLS."""
