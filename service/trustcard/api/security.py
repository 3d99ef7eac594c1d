"""Client authentication (API keys), per-client rate limits and request size limits.

Keys come from API_KEYS (on Kubernetes a mounted Secret). Clients send one as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. Probes, scrapes and the OpenAPI document
stay open: they carry no task data, and NetworkPolicies decide who reaches them.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from trustcard.api.resources import ApiResources
from trustcard.api.schemas import ErrorBody

# Documented on every client route (the OpenAPI document is the contract schemathesis checks).
CLIENT_ROUTE_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid API key (when keys are set)"},
    413: {"model": ErrorBody, "description": "Query string or body above the size limit"},
    429: {"model": ErrorBody, "description": "Rate limit of this client exceeded (Retry-After)"},
}

bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token")
key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")


def key_id(key: str) -> str:
    """A short, non-reversible name for a key: what logs and limits use, never the key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def matching_key(presented: str, keys: tuple[str, ...]) -> str | None:
    """The configured key equal to `presented`, compared in constant time against every key."""
    found = None
    candidate = presented.encode()
    for key in keys:
        if hmac.compare_digest(candidate, key.encode()):
            found = key
    return found


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per client, in this process (each API replica limits on its own)."""

    def __init__(self, per_second: float, burst: int, max_clients: int = 10_000) -> None:
        self.per_second = per_second
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def retry_after(self, client: str, now: float | None = None) -> float | None:
        """None when the request may go ahead, else seconds until a token is available."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(client, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        self._buckets[client] = bucket  # most recently used last
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.per_second


async def authorize(request: Request) -> str:
    """The client's identity (a key id, or its address when keys are off), rate-limited.

    One dependency reading the headers itself, as `bearer` and `key_header` would: FastAPI's
    work per dependency (~5 % of a submission's CPU for the four this used to be) is paid once.
    Those two still describe the schemes in the OpenAPI document (`document_client_auth`).
    """
    resources: ApiResources = request.app.state.resources
    keys = resources.settings.api_keys
    if keys:
        presented = _presented_key(request)
        key = matching_key(presented, keys) if presented else None
        if key is None:
            raise HTTPException(
                status_code=401,
                detail="missing or invalid API key: send `Authorization: Bearer <key>` "
                "or `X-API-Key: <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        client = key_id(key)
    else:
        client = request.client.host if request.client else "unknown"
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None and (wait := limiter.retry_after(client)) is not None:
        raise HTTPException(
            status_code=429,
            detail=f"rate limit of {limiter.per_second:g} requests/s per client exceeded; "
            f"retry in {max(wait, 0.01):.2f} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    request.state.client_id = client
    return client


def _presented_key(request: Request) -> str | None:
    """A bearer token (as HTTPBearer reads it), else the X-API-Key header (as APIKeyHeader)."""
    headers = request.headers
    scheme, credentials = get_authorization_scheme_param(headers.get("Authorization"))
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return headers.get(key_header.model.name) or None


async def documented_auth(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(key_header)],
) -> None:
    """Never called: what FastAPI documents the client routes' security from."""


def document_client_auth(app: FastAPI, documented: FastAPI) -> None:
    """Serve `documented`'s OpenAPI document from `app`.

    `documented` has the same routes, with `documented_auth` where `app` has `authorize`, so
    the document names both schemes on every client route exactly as FastAPI writes them.
    """
    app.openapi = documented.openapi  # type: ignore[method-assign]


ClientDep = Annotated[str, Depends(authorize)]
