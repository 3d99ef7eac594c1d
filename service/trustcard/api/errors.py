"""Exceptions the routes raise and the handlers that turn them into JSON responses."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class DependencyUnavailable(Exception):
    """A backing service (broker, result backend) did not answer in time."""

    def __init__(
        self, dependency: str, reason: str, *, timed_out: bool = False, maybe_sent: bool = False
    ) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason
        # A timeout leaves the outcome unknown (the call may still complete later).
        self.timed_out = timed_out
        # The command may have reached Redis (it failed after connecting): it may still run.
        self.maybe_sent = maybe_sent or timed_out
        # Set by a submission whose message may have been queued: the answer names the id.
        self.task_id: str | None = None


# What a 503 to a submission says when its message may have been queued anyway.
OUTCOME_UNKNOWN = "unknown"


async def _dependency_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DependencyUnavailable)
    log.warning("%s %s -> 503: %s", request.method, request.url.path, exc)
    content: dict[str, str] = {"detail": str(exc), "dependency": exc.dependency}
    if exc.task_id is not None:
        # Not "not queued": Redis may run the write it was sent once it answers again.
        content.update(
            detail=f"{exc}; the task may still run: GET /tasks/{exc.task_id} tells "
            "(404: it was not queued)",
            task_id=exc.task_id,
            outcome=OUTCOME_UNKNOWN,
        )
    return JSONResponse(status_code=503, content=content, headers={"Retry-After": "5"})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Every HTTP error, unknown routes and wrong methods included, answers JSON `detail`."""
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
    )


# A 422 names at most this many problems and echoes at most this much of each bad input:
# a 1 MB body of 90k unknown keys was echoed back whole (9 MB, seconds of CPU).
MAX_REPORTED_ERRORS = 10
MAX_ECHOED_CHARS = 200


def echoed_input(value: Any) -> Any:
    """A short, JSON-safe stand-in for a bad input (no NaN/inf floats, no lone surrogates)."""
    if value is None or (isinstance(value, bool | int) and abs(value) < 2**53):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= MAX_ECHOED_CHARS:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, Mapping):
        return f"<object with {len(value)} keys>"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return f"<array of {len(value)} items>"
    text = repr(value)
    if len(text) > MAX_ECHOED_CHARS:
        text = text[:MAX_ECHOED_CHARS] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def bounded_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """The first MAX_REPORTED_ERRORS validation errors, each with a bounded `input`."""
    reported = []
    for error in errors[:MAX_REPORTED_ERRORS]:
        item = {
            "type": error.get("type"),
            "loc": [echoed_input(part) for part in error.get("loc", ())],
            "msg": echoed_input(str(error.get("msg", ""))),
        }
        if "input" in error:
            item["input"] = echoed_input(error["input"])
        reported.append(item)
    return reported


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, bounded: never a 500 on input JSON cannot carry (inf, a lone surrogate)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    content: dict[str, Any] = {"detail": bounded_errors(errors)}
    if len(errors) > MAX_REPORTED_ERRORS:
        content["more_errors"] = len(errors) - MAX_REPORTED_ERRORS
    return JSONResponse(status_code=422, content=content)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DependencyUnavailable, _dependency_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
