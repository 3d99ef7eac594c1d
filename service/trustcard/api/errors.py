"""Exceptions the routes raise and the handlers that turn them into JSON responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DependencyUnavailable, _dependency_unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
