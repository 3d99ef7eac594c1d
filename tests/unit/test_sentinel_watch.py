"""Sentinel events as the watch reads them, and what they do to new connections."""

from __future__ import annotations

import socket

import pytest
from redis.exceptions import ConnectionError

from trustcard.config import Settings
from trustcard.redis_clients.master_switch import MasterSwitch, MasterSwitches
from trustcard.redis_clients.sentinel_watch import (
    SentinelWatch,
    master_name_of,
    parse_switch,
    start_sentinel_watch,
)


def test_off_without_sentinel() -> None:
    assert start_sentinel_watch(Settings(REDIS_URL="redis://127.0.0.1:6379/0")) is None


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        ("trustcard 10.0.0.1 6379 10.0.0.2 6379", "trustcard"),
        ("master trustcard 10.0.0.1 6379", "trustcard"),
        ("slave 10.0.0.2:6379 10.0.0.2 6379 @ trustcard 10.0.0.1 6379", "trustcard"),
        ("", None),
    ],
)
def test_master_name_of_each_event_form(payload: str, name: str | None) -> None:
    assert master_name_of(payload) == name


def test_parse_switch() -> None:
    assert parse_switch("trustcard 10.0.0.1 6379 10.0.0.2 6380") == MasterSwitch(
        "trustcard", ("10.0.0.1", 6379), ("10.0.0.2", 6380)
    )
    assert parse_switch("trustcard 10.0.0.1 6379") is None
    assert parse_switch("trustcard a b c d") is None


def _watch(switches: MasterSwitches, seen: list[MasterSwitch]) -> SentinelWatch:
    return SentinelWatch([], "trustcard", {}, on_switch=seen.append, switches=switches)


def test_a_failover_holds_new_connections_until_the_switch() -> None:
    switches = MasterSwitches()
    seen: list[MasterSwitch] = []
    watch = _watch(switches, seen)
    assert switches.master_address("trustcard") is None  # ask the Sentinels
    watch.handle("+try-failover", "master trustcard 10.0.0.1 6379")
    with pytest.raises(ConnectionError, match="being switched"):
        switches.master_address("trustcard")
    # Another master's events are not ours.
    watch.handle("+switch-master", "other 10.0.0.1 6379 10.0.0.9 6379")
    with pytest.raises(ConnectionError):
        switches.master_address("trustcard")
    # Every Sentinel reports the switch: followed once, counted once.
    for _ in range(3):
        watch.handle("+switch-master", "trustcard 10.0.0.1 6379 10.0.0.2 6379")
    assert switches.master_address("trustcard") == ("10.0.0.2", 6379)
    assert len(seen) == 1


def test_the_worker_consumer_does_not_hold() -> None:
    """hold_on_start=False (the worker's main process): only the switch moves it."""
    switches = MasterSwitches()
    watch = SentinelWatch([], "trustcard", {}, switches=switches, hold_on_start=False)
    watch.handle("+try-failover", "master trustcard 10.0.0.1 6379")
    assert switches.master_address("trustcard") is None
    watch.handle("+switch-master", "trustcard 10.0.0.1 6379 10.0.0.2 6379")
    assert switches.master_address("trustcard") == ("10.0.0.2", 6379)


def test_an_aborted_failover_releases_the_hold() -> None:
    switches = MasterSwitches()
    watch = _watch(switches, [])
    watch.handle(
        "+failover-state-send-slaveof-noone",
        "slave 10.0.0.2:6379 10.0.0.2 6379 @ trustcard 10.0.0.1 6379",
    )
    with pytest.raises(ConnectionError):
        switches.master_address("trustcard")
    watch.handle("-failover-abort-no-good-slave", "master trustcard 10.0.0.1 6379")
    assert switches.master_address("trustcard") is None


class _Pool:
    service_name = "trustcard"


class _Connection:
    """What cut_connections reads of a redis-py connection: pool, address, socket."""

    connection_pool = _Pool()

    def __init__(self, sock: socket.socket, port: int) -> None:
        self._sock = sock
        self.host, self.port = "127.0.0.1", port


def test_cut_connections_shuts_the_sockets_down_but_the_new_masters() -> None:
    switches = MasterSwitches()
    old_side, old_peer = socket.socketpair()
    new_side, new_peer = socket.socketpair()
    with old_side, old_peer, new_side, new_peer:
        on_old, on_new = _Connection(old_side, 6379), _Connection(new_side, 6380)
        switches.register(on_old)
        switches.register(on_new)
        switch = MasterSwitch("trustcard", ("127.0.0.1", 6379), ("127.0.0.1", 6380))
        assert switches.switched(switch)
        # The reader of a cut connection sees it closed; the other one stays open.
        assert old_peer.recv(1) == b""
        new_peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            new_peer.recv(1)
