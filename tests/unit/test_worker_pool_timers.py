"""Cancelled time-limit timers leave the event loop's heap (trustcard.worker.worker_pool)."""

from __future__ import annotations

from typing import Any

from kombu.asynchronous.timer import Timer

from trustcard.worker.worker_pool import drop_cancelled_timers


def new_timer() -> Any:
    """kombu's real Timer (the hub's), typed loosely: kombu ships no annotations for it."""
    return Timer()  # type: ignore[no-untyped-call]


def test_cancelled_entries_are_dropped_and_the_rest_still_fire_in_order() -> None:
    timer = new_timer()
    fired: list[int] = []
    entries = [timer.call_at(1000.0 - i, fired.append, (i,)) for i in range(10)]
    for entry in entries[::2]:
        entry.cancel()
    queue_before = timer._queue

    drop_cancelled_timers(timer)

    assert timer._queue is queue_before  # the hub's schedule iterator holds this list
    assert len(timer) == 5
    # Run them all now: only the five live ones, soonest deadline first.
    for event in sorted(timer._queue):
        event[2]()
    assert fired == [9, 7, 5, 3, 1]


def test_a_heap_without_cancelled_entries_is_left_alone() -> None:
    timer = new_timer()
    for i in range(3):
        timer.call_at(100.0 + i, print)
    snapshot = list(timer._queue)
    drop_cancelled_timers(timer)
    assert timer._queue == snapshot


def test_the_running_schedule_iterator_sees_the_compacted_heap() -> None:
    timer = new_timer()
    fired: list[str] = []
    soon = timer.call_at(0.0, fired.append, ("due",))
    cancelled = timer.call_at(0.0, fired.append, ("cancelled",))
    schedule = iter(timer)
    cancelled.cancel()
    drop_cancelled_timers(timer)
    _wait, entry = next(schedule)
    assert entry is soon
    entry()
    assert next(schedule) == (None, None)
    assert fired == ["due"]
