"""Exceptions the routes raise and the handlers that turn them into JSON responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class DependencyUnavailable(Exception):
    """A backing service (broker, result backend) did not answer in time."""

    def __init__(self, dependency: str, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason
        # A timeout leaves the outcome unknown (the call may still complete later).
        self.timed_out = timed_out


async def _dependency_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DependencyUnavailable)
    log.warning("%s %s -> 503: %s", request.method, request.url.path, exc)
    return JSONResponse(
        status_code=503,
        content={"detail": str(exc), "dependency": exc.dependency},
        headers={"Retry-After": "5"},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Every HTTP error, unknown routes and wrong methods included, answers JSON `detail`."""
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DependencyUnavailable, _dependency_unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
