"""Listen to the Sentinels' failover events and make this process's Redis clients follow.

What Jedis's `JedisSentinelPool` does and redis-py and kombu do not: one daemon thread per
Sentinel subscribes to its event channels; see redis_clients.master_switch for what each
event does to the connections. Every Sentinel, not one: only the leader of a failover
publishes `+try-failover` (before it sends `REPLICAOF NO ONE` to the replica it promotes),
and the other Sentinels publish `+switch-master` first (1 s after the promotion here; the
leader 6 s later). A thread whose Sentinel dies reconnects to it every RECONNECT_SECONDS; the
others keep listening meanwhile.

Off when REDIS_SENTINEL_HOSTS is not set. Started in the API's lifespan, the worker's main
process and each of its pool processes (threads do not survive fork).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import RedisError

from trustcard.config import Settings
from trustcard.redis_clients.connection import sentinel_kwargs
from trustcard.redis_clients.master_switch import MASTER_SWITCHES, MasterSwitch, MasterSwitches

log = logging.getLogger(__name__)

SWITCH = "+switch-master"
# A failover starts: the leader elected, then the replica told `REPLICAOF NO ONE`.
STARTS = ("+try-failover", "+failover-state-send-slaveof-noone")
# The failover did not happen: `-failover-abort-not-elected`, `-failover-abort-no-good-slave`...
ABORT_PATTERN = "-failover-abort-*"
RECONNECT_SECONDS = 1.0
# get_message's wait: how soon a thread sees stop().
POLL_SECONDS = 1.0
SOCKET_SECONDS, CONNECT_SECONDS, HEALTH_CHECK_SECONDS = 5.0, 2.0, 10

OnSwitch = Callable[[MasterSwitch], None]


def master_name_of(data: str) -> str | None:
    """The master named in a Sentinel event's payload.

    `<name> <old-ip> <old-port> <new-ip> <new-port>` for +switch-master, `master <name> <ip>
    <port>` for a master's events, `slave <ip:port> <ip> <port> @ <name> <ip> <port>` else.
    """
    fields = data.split()
    if "@" in fields:
        at = fields.index("@")
        return fields[at + 1] if len(fields) > at + 1 else None
    if len(fields) >= 2 and fields[0] == "master":
        return fields[1]
    return fields[0] if fields else None


def parse_switch(data: str) -> MasterSwitch | None:
    fields = data.split()
    if len(fields) != 5:
        return None
    name, old_host, old_port, new_host, new_port = fields
    try:
        return MasterSwitch(name, (old_host, int(old_port)), (new_host, int(new_port)))
    except ValueError:
        return None


class SentinelWatch:
    """Daemon threads, one per Sentinel, feeding `switches` for one master name."""

    def __init__(
        self,
        sentinels: Sequence[tuple[str, int]],
        master_name: str,
        connection_kwargs: dict[str, Any],
        on_switch: OnSwitch | None = None,
        switches: MasterSwitches = MASTER_SWITCHES,
        hold_on_start: bool = True,
    ) -> None:
        self.sentinels = list(sentinels)
        self.master_name = master_name
        self.connection_kwargs = connection_kwargs
        self.on_switch = on_switch
        self.switches = switches
        self.hold_on_start = hold_on_start
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Set once each thread has subscribed (tests wait for it).
        self.subscribed = threading.Semaphore(0)

    def start(self) -> SentinelWatch:
        for host, port in self.sentinels:
            thread = threading.Thread(
                target=self._watch, args=(host, port), name=f"sentinel-watch {host}:{port}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = POLL_SECONDS + 1) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """True once every thread has subscribed at least once."""
        return all(self.subscribed.acquire(timeout=timeout) for _ in self._threads)

    def _watch(self, host: str, port: int) -> None:
        warned = False
        while not self._stop.is_set():
            client = redis.Redis(host=host, port=port, **self.connection_kwargs)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(SWITCH, *STARTS)
                pubsub.psubscribe(ABORT_PATTERN)
                self.subscribed.release()
                if warned:
                    log.info("listening to Sentinel %s:%d again", host, port)
                warned = False
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL_SECONDS)
                    if message is not None:
                        self._handle_safely(_text(message["channel"]), _text(message["data"]))
            except (RedisError, OSError) as exc:
                if not warned:
                    log.warning("Sentinel %s:%d not listened to: %s (retrying)", host, port, exc)
                    warned = True
            finally:
                pubsub.close()
                client.close()
            self._stop.wait(RECONNECT_SECONDS)

    def _handle_safely(self, channel: str, data: str) -> None:
        try:
            self.handle(channel, data)
        except Exception:  # the thread must outlive any one event
            log.exception("Sentinel event %s %r not handled", channel, data)

    def handle(self, channel: str, data: str) -> None:
        """Act on one event (called on a watcher thread)."""
        if master_name_of(data) != self.master_name:
            return
        if channel == SWITCH:
            switch = parse_switch(data)
            if switch is None:
                return
            if self.switches.switched(switch):
                log.warning(
                    "Redis master %r switched from %s:%d to %s:%d: connections moved",
                    switch.master_name,
                    *switch.old,
                    *switch.new,
                )
                if self.on_switch is not None:
                    self.on_switch(switch)
        elif channel in STARTS and self.hold_on_start:
            self.switches.hold(self.master_name)
            log.info("Sentinel %s for Redis master %r: new connections wait", channel, data)
        elif channel.startswith("-failover-abort"):
            self.switches.release(self.master_name)
            log.warning("Sentinel %s for Redis master %r", channel, data)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def watch_kwargs(settings: Settings) -> dict[str, Any]:
    """How the watcher connects to the Sentinels: their password and TLS, bounded timeouts."""
    return sentinel_kwargs(
        settings,
        settings.broker_url,
        socket_timeout=SOCKET_SECONDS,
        socket_connect_timeout=CONNECT_SECONDS,
        socket_keepalive=True,
        # A PING when a subscription has been idle this long: a dead Sentinel is noticed.
        health_check_interval=HEALTH_CHECK_SECONDS,
    )


def start_sentinel_watch(
    settings: Settings, on_switch: OnSwitch | None = None, hold_on_start: bool = True
) -> SentinelWatch | None:
    """The watch of this process; None when Sentinel is not configured.

    `hold_on_start` False: the process's connections move at the switch only, not cut when
    the failover starts (the worker's consumer, see worker.signals).
    """
    if not settings.sentinel_hosts:
        return None
    return SentinelWatch(
        settings.sentinel_hosts,
        settings.REDIS_SENTINEL_MASTER_NAME,
        watch_kwargs(settings),
        on_switch,
        hold_on_start=hold_on_start,
    ).start()
