"""test.* tasks: the seed guide's smoke tests for the queue (add, sleep, long_task)."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from trustcard.celery_app import celery_app
from trustcard.task_model.progress import Progress, run_simulated_stages
from trustcard.task_model.status import PROGRESS_STATE
from trustcard.tasks.limits import (
    DEFAULT_STAGE_SECONDS,
    MAX_ADD_OPERAND,
    MAX_SLEEP_SECONDS,
    MAX_STAGE_SECONDS,
)

log = logging.getLogger(__name__)


def _require_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")


class StoppedAtSoftTimeLimit(RuntimeError):
    """test.sleep reached the soft time limit and cleaned up before failing."""


@celery_app.task(name="test.add")
def add(x: int, y: int) -> int | float:
    """Add two numbers."""
    for name, value in (("x", x), ("y", y)):
        _require_number(name, value)
        # Same bound as the API: a plain client must not get a result JavaScript rounds.
        if not -MAX_ADD_OPERAND <= value <= MAX_ADD_OPERAND:
            raise ValueError(f"{name} must be between -2**53 and 2**53")
    return x + y


@celery_app.task(name="test.sleep")
def sleep(seconds: float, cleanup_seconds: float = 0) -> dict[str, float]:
    """Sleep for 0..60 seconds and report how long it slept.

    At the soft time limit it spends `cleanup_seconds` cleaning up, then fails saying so;
    a cleanup that outlasts the hard limit is killed there (the fault tests use both).
    """
    for name, value in (("seconds", seconds), ("cleanup_seconds", cleanup_seconds)):
        _require_number(name, value)
        if not 0 <= value <= MAX_SLEEP_SECONDS:
            raise ValueError(f"{name} must be between 0 and {MAX_SLEEP_SECONDS}, got {value}")
    start = time.monotonic()
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        stopped = time.monotonic() - start
        log.warning("test.sleep hit the soft time limit after %.1f s; cleaning up", stopped)
        time.sleep(cleanup_seconds)
        raise StoppedAtSoftTimeLimit(
            f"soft time limit reached after {stopped:.1f} s of {seconds:g} s; cleaned up"
        ) from None
    return {"slept_seconds": round(time.monotonic() - start, 3)}


@celery_app.task(name="test.long_task", bind=True)
def long_task(self: Task, stage_seconds: float = DEFAULT_STAGE_SECONDS) -> dict[str, Any]:
    """Five named stages (~10 s by default) reporting progress as they go."""
    _require_number("stage_seconds", stage_seconds)
    if not 0 <= stage_seconds <= MAX_STAGE_SECONDS:
        raise ValueError(f"stage_seconds must be between 0 and {MAX_STAGE_SECONDS}")

    def report(progress: Progress) -> None:
        self.update_state(state=PROGRESS_STATE, meta=progress.as_meta())

    return run_simulated_stages(report, stage_seconds)


class DeliberateFailure(RuntimeError):
    """Raised by test.fail so clients can see what a failed task looks like."""


@celery_app.task(name="test.fail")
def fail(message: str = "deliberate failure") -> None:
    """Raise on purpose: shows the `failed` status and its readable error."""
    raise DeliberateFailure(str(message)[:200])
