"""A child whose exit was handled is not re-registered with the hub (trustcard.worker.worker_pool).

Found by the Sentinel partition test: the consumer re-registers the pool after a broker
reconnect; a child being recycled at that moment had `_sentinel_poll = None`, stock celery 5.7
handed that to kombu's Hub and the worker exited on the ValueError.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from celery.concurrency import asynpool
from kombu.asynchronous import Hub

from trustcard.worker.worker_pool import RecyclingAsynPool


def test_stock_pool_exits_on_an_untracked_child() -> None:
    hub = Hub()  # type: ignore[no-untyped-call]
    untracked = SimpleNamespace(_sentinel_poll=None)
    pool = asynpool.AsynPool.__new__(asynpool.AsynPool)
    with pytest.raises(ValueError, match="file descriptor is None"):
        pool._track_child_process(untracked, hub)
    hub.close()  # type: ignore[no-untyped-call]


def test_our_pool_skips_it_and_still_tracks_a_live_child() -> None:
    hub = Hub()  # type: ignore[no-untyped-call]
    pool = RecyclingAsynPool.__new__(RecyclingAsynPool)
    pool._track_child_process(SimpleNamespace(_sentinel_poll=None), hub)
    assert not hub.readers
    read_end, write_end = os.pipe()
    live = SimpleNamespace(_popen=SimpleNamespace(sentinel=read_end))
    try:
        pool._track_child_process(live, hub)
        assert live._sentinel_poll in hub.readers  # a dup of the exit sentinel, watched
    finally:
        hub.remove(live._sentinel_poll)  # type: ignore[no-untyped-call]
        for fd in (live._sentinel_poll, read_end, write_end):
            os.close(fd)
        hub.close()  # type: ignore[no-untyped-call]
