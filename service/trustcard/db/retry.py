"""Bounded retries of one database step: a restart, a lock or a full disk is waited out, then not.

The worker's analysis steps each run in their own transaction, so a step that failed on a
connection error, a lock (`database is locked`) or a full disk (`database or disk is full`) can
simply run again. Without this, a 3 s PostgreSQL restart left analyses `pending` for ever: the
task failed before it could record anything (issue 14.7).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE_SECONDS = 0.2
LONGEST_PAUSE_SECONDS = 2.0


class DatabaseStepFailed(RuntimeError):
    """A database step still failed when its retry bound ran out; the message says which, why."""


def is_transient(exc: BaseException) -> bool:
    """Worth running again: any driver error but a constraint violation (a real conflict)."""
    return isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError)


def describe(exc: BaseException) -> str:
    """One line: the driver's error type and first message line."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def with_retry(
    step: Callable[[], T],
    *,
    what: str,
    seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `step` until it succeeds, or raise DatabaseStepFailed once `seconds` have passed.

    `step` must open its own session, so every attempt starts on a fresh connection.
    """
    deadline = clock() + seconds
    pause = FIRST_PAUSE_SECONDS
    attempt = 1
    while True:
        try:
            return step()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            left = deadline - clock()
            if left <= 0:
                raise DatabaseStepFailed(
                    f"database unavailable while {what} ({attempt} attempts in {seconds:g} s): "
                    f"{describe(exc)}"
                ) from None
            log.warning("database error while %s (attempt %d): %s", what, attempt, describe(exc))
            sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
            attempt += 1
