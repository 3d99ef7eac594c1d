"""Reject malformed task messages before Celery builds a request from them.

Celery 5.7 unpacks a protocol-2 body as `args, kwargs, embed` in the worker's main process
without checking its shape: a message naming a known task with any other body (a string, a
2-item list, a number) raises there and stops the whole worker ("Unrecoverable error"); the
unacked message is then restored and stops the next worker too, a crash loop. Raising
InvalidTaskError instead makes Celery log "Received invalid task message" and drop it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import InvalidTaskError
from celery.utils.time import maybe_iso8601

log = logging.getLogger(__name__)


def _check_iso_time(headers: dict[str, Any], name: str) -> None:
    """Parsed like Celery does (its parser, so no time Celery accepts is refused here)."""
    value = headers.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidTaskError(f"header {name} must be an ISO 8601 time")
    try:
        maybe_iso8601(value)
    except (AttributeError, ValueError, TypeError, OverflowError):
        raise InvalidTaskError(f"header {name} is not an ISO 8601 time: {value[:40]!r}") from None


def _is_seconds(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def check_headers(headers: dict[str, Any]) -> None:
    """The protocol-2 headers Celery reads before the task runs have usable types."""
    if not isinstance(headers.get("id"), str):
        raise InvalidTaskError("header id must be a string")
    _check_iso_time(headers, "eta")
    _check_iso_time(headers, "expires")
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple) and len(limits) == 2 and all(map(_is_seconds, limits))
    ):
        raise InvalidTaskError("header timelimit must be [hard, soft] seconds")
    retries = headers.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)):
        raise InvalidTaskError("header retries must be an integer")


def check_body(payload: Any) -> None:
    """A protocol-2 body is [args, kwargs, embed]; a hybrid one is {"args": ..., "kwargs": ...}."""
    if isinstance(payload, dict):
        args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    elif isinstance(payload, list | tuple) and len(payload) == 3:
        args, kwargs, embed = payload
        if embed is not None and not isinstance(embed, dict):
            raise InvalidTaskError("body[2] (embed) must be an object or null")
    else:
        raise InvalidTaskError("body must be [args, kwargs, embed]")
    if not isinstance(args, list | tuple):
        raise InvalidTaskError("task args must be a list")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidTaskError("task kwargs must be an object")


def check_message(message: Any, body: Any) -> None:
    """Raise InvalidTaskError for a message Celery could not turn into a request."""
    headers = message.headers
    if isinstance(headers, dict) and "task" in headers:
        check_headers(headers)
        # Decoding errors (bad JSON, pickle refused) propagate: Celery already handles them.
        check_body(message.payload)
    else:
        check_body(body)


def _record_failure(app: Any, message: Any, exc: InvalidTaskError) -> None:
    """Store the rejection as the task's result, so its status is `failed`, not `pending`."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_id = headers.get("id")
    if not isinstance(task_id, str):
        return
    try:
        app.backend.mark_as_failure(task_id, exc, call_errbacks=False)
    except Exception:  # the message is dropped either way; the log says why
        log.warning("could not store the rejection of task %s", task_id, exc_info=True)


Strategy = Callable[..., Any]


class CheckedTask(Task):  # type: ignore[misc]
    """Base class of every trustcard task: its worker strategy checks messages first."""

    # Keeps tasks stopped by a broker connection loss redeliverable (see request.py).
    Request = "trustcard.tasks.request:TrustcardRequest"

    def start_strategy(self, app: Any, consumer: Any, **kwargs: Any) -> Strategy:
        handle: Strategy = super().start_strategy(app, consumer, **kwargs)

        def checked(message: Any, body: Any, *args: Any, **kw: Any) -> Any:
            try:
                check_message(message, body)
            except InvalidTaskError as exc:
                _record_failure(app, message, exc)
                raise
            return handle(message, body, *args, **kw)

        return checked
