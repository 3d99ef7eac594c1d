"""RequestGuard: 413 before the route runs, a chunked body counted as it is read, metrics kept."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from trustcard.api.request_guard import RequestGuard
from trustcard.observability.api_metrics import UNMATCHED_ROUTE

MAX_QUERY = 256
MAX_BODY = 1024


def _app(calls: list[str]) -> RequestGuard:
    async def echo(request: Request) -> JSONResponse:
        calls.append(request.url.path)
        body = await request.body() if request.query_params.get("read") else b""
        return JSONResponse({"read": len(body)})

    async def as_json(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    app = Starlette(
        routes=[Route("/guarded/echo", echo, methods=["POST"])],
        exception_handlers={HTTPException: as_json},
    )
    return RequestGuard(app, max_query_bytes=MAX_QUERY, max_body_bytes=MAX_BODY)


def _post(app: RequestGuard, url: str, content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://guard") as client:
            return await client.post(url, content=content)

    return asyncio.run(post())


async def _chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"0" * min(size, total - start)


def test_within_the_limits_the_route_answers() -> None:
    calls: list[str] = []
    response = _post(_app(calls), "/guarded/echo?read=1", b"0" * MAX_BODY)
    assert response.status_code == 200
    assert response.json() == {"read": MAX_BODY}
    assert calls == ["/guarded/echo"]


def test_oversized_query_string_or_declared_body_never_reaches_the_route() -> None:
    calls: list[str] = []
    app = _app(calls)
    long_query = _post(app, "/guarded/echo?q=" + "x" * MAX_QUERY, b"")
    assert long_query.status_code == 413
    assert long_query.json()["detail"] == f"query string too large: at most {MAX_QUERY} bytes"
    # A route that ignores its body (like a submission) must not run either.
    big_body = _post(app, "/guarded/echo", b"0" * (MAX_BODY + 1))
    assert big_body.status_code == 413
    assert big_body.json()["detail"] == f"request body too large: at most {MAX_BODY} bytes"
    assert calls == []


def test_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    calls: list[str] = []
    app = _app(calls)
    within = _post(app, "/guarded/echo?read=1", _chunks(MAX_BODY))
    assert within.json() == {"read": MAX_BODY}
    above = _post(app, "/guarded/echo?read=1", _chunks(MAX_BODY + 1))
    assert above.status_code == 413
    assert "request body too large" in above.json()["detail"]


def _requests_counted(**labels: str) -> float:
    return REGISTRY.get_sample_value("trustcard_http_requests_total", labels) or 0.0


def test_refusals_and_answers_are_counted_by_route_template() -> None:
    app = _app([])
    refused = {"route": UNMATCHED_ROUTE, "method": "POST", "status": "413"}
    answered = {"route": "/guarded/echo", "method": "POST", "status": "200"}
    before = _requests_counted(**refused), _requests_counted(**answered)
    _post(app, "/guarded/echo?q=" + "x" * MAX_QUERY, b"")
    _post(app, "/guarded/echo", b"")
    assert (_requests_counted(**refused), _requests_counted(**answered)) == (
        before[0] + 1,
        before[1] + 1,
    )


def _post_with_id(app: RequestGuard, request_id: str) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://guard") as client:
            return await client.post("/guarded/echo", headers={"X-Request-ID": request_id})

    return asyncio.run(post())


def test_a_plain_request_id_is_echoed_and_anything_else_replaced() -> None:
    app = _app([])
    assert _post_with_id(app, "abc-123_x.y:z").headers["x-request-id"] == "abc-123_x.y:z"
    for unusable in ("two words", "x" * 129, '"quoted"', ""):
        answered = _post_with_id(app, unusable).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", answered), (unusable, answered)


def test_the_access_line_carries_the_request_as_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="trustcard.access"):
        _post_with_id(_app([]), "req-7")
    (record,) = [r for r in caplog.records if r.name == "trustcard.access"]
    fields = {k: getattr(record, k) for k in ("method", "route", "path", "status", "request_id")}
    assert fields == {
        "method": "POST",
        "route": "/guarded/echo",
        "path": "/guarded/echo",
        "status": 200,
        "request_id": "req-7",
    }
    assert getattr(record, "duration_ms") >= 0  # noqa: B009 - an `extra` field
