"""One pure-ASGI layer in front of the routes: size limits (413), request metrics, request ids
and the access log.

It replaces FastAPI's `max_body_size` (four layers: two wrapping `send`, one `receive`, two
exception translators), our query-string check and our metrics middleware. Every layer is one
more coroutine frame that each request, and each `send` of its response, passes through: the
six measured ~7 % of a submission's CPU; this one does their work with one `send` wrapper.

Oversized requests are refused before any route runs. FastAPI's limiter answered a declared
oversized body only when the route read the body or started its response, so a route that
ignores its body (a submission) ran first; a chunked body without Content-Length is still
counted as it is read.

Access lines are written here, not by uvicorn: uvicorn logs before the body is sent and knows
neither the route template nor the request id, so its line is one string a collector must parse.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trustcard.observability.api_metrics import observe_request, route_template
from trustcard.observability.logs import REQUEST_ID

# `trustcard api --no-access-log` disables this logger (cli.py).
access_log = logging.getLogger("trustcard.access")
REQUEST_ID_HEADER = b"x-request-id"
# A client's or proxy's id is kept when it is a plain token; anything else gets a fresh one
# (an id is copied into every log line of the request: no spaces, quotes or control bytes).
_ACCEPTED_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


class RequestGuard:
    """413 for a query string or body above its limit; every HTTP request counted and timed."""

    def __init__(self, app: ASGIApp, max_query_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _request_id(scope)
        id_header = (REQUEST_ID_HEADER, request_id.encode())
        token = REQUEST_ID.set(request_id)

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            length = _declared_length(scope)
            if len(scope.get("query_string", b"")) > self.max_query_bytes:
                await _refuse(send_observed, "query string", self.max_query_bytes)
            elif length is None:
                await self.app(scope, self._counted(receive), send_observed)
            elif length > self.max_body_bytes:
                await _refuse(send_observed, "request body", self.max_body_bytes)
            else:
                # The server reads no more than the declared length.
                await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - started
            observe_request(scope, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(scope, status, seconds, request_id)
            REQUEST_ID.reset(token)

    def _counted(self, receive: Receive) -> Receive:
        """A body of unknown length (chunked), refused once it passes the limit."""
        received = 0
        limit = self.max_body_bytes

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The routes' error handler answers it: 413 with a JSON `detail`.
                    raise HTTPException(413, _too_large("request body", limit))
            return message

        return receive_counted


def _request_id(scope: Scope) -> str:
    """The request's X-Request-ID when it is a plain token, else a new random one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _ACCEPTED_REQUEST_ID.fullmatch(value):
            return str(value.decode())
    return uuid.uuid4().hex


def _log_access(scope: Scope, status: int, seconds: float, request_id: str) -> None:
    """One line per answered request; its parts are fields of the JSON line too."""
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else ""
    path: str = scope["path"]
    query: bytes = scope.get("query_string", b"")
    target = f"{path}?{query.decode(errors='replace')}" if query else path
    method: str = scope["method"]
    version: str = scope.get("http_version", "1.1")
    duration_ms = round(seconds * 1000, 3)
    access_log.info(
        '%s - "%s %s HTTP/%s" %d %.1fms',
        address,
        method,
        target,
        version,
        status,
        duration_ms,
        extra={
            "method": method,
            "route": route_template(scope),
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "client_addr": address,
            "http_version": version,
            "request_id": request_id,
        },
    )


def _declared_length(scope: Scope) -> int | None:
    """The body's Content-Length (0 without one); None when it is chunked or unreadable."""
    length: int | None = 0
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            chunked = True
    return None if chunked else length


def _too_large(what: str, limit: int) -> str:
    return f"{what} too large: at most {limit} bytes"


async def _refuse(send: Send, what: str, limit: int) -> None:
    body = json.dumps({"detail": _too_large(what, limit)}, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
