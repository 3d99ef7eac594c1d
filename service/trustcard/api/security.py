"""Client authentication (API keys), per-client rate limits and request size limits.

Keys come from API_KEYS (on Kubernetes a mounted Secret). Clients send one as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. Probes, scrapes and the OpenAPI document
stay open: they carry no task data, and NetworkPolicies decide who reaches them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from trustcard.api.resources import ApiResources
from trustcard.api.schemas import ErrorBody
from trustcard.config import Settings

log = logging.getLogger(__name__)

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


class SharedRateLimits:
    """Per-client and per-address failed-auth limits kept in Redis, shared by every replica.

    `limits`' sliding-window counters: RATE_LIMIT_BURST requests per BURST/PER_SECOND seconds
    per client, AUTH_FAILURES_PER_MINUTE failed authentications per minute per address. When
    Redis does not answer the request goes ahead (the routes then answer 503 themselves).
    """

    def __init__(self, settings: Settings, connection_pool: ConnectionPool) -> None:
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            connection_pool=connection_pool,  # type: ignore[arg-type]  # typed as plain options
            key_prefix="trustcard-limits",
            wrap_exceptions=True,
        )
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self.per_second = settings.RATE_LIMIT_PER_SECOND
        self.requests: RateLimitItem | None = None
        if settings.RATE_LIMIT_PER_SECOND:
            window = max(1, round(settings.RATE_LIMIT_BURST / settings.RATE_LIMIT_PER_SECOND))
            self.requests = RateLimitItemPerSecond(settings.RATE_LIMIT_BURST, window)
        self.auth_failures: RateLimitItem | None = (
            RateLimitItemPerMinute(settings.AUTH_FAILURES_PER_MINUTE)
            if settings.AUTH_FAILURES_PER_MINUTE
            else None
        )

    async def hit(self, item: RateLimitItem | None, *identity: str) -> float | None:
        """Count one request; None when it may go ahead, else seconds until it may."""
        return await self._retry_after(self._limiter.hit, item, identity)

    async def blocked(self, item: RateLimitItem | None, *identity: str) -> float | None:
        """Without counting: None when a request may go ahead, else seconds until it may."""
        return await self._retry_after(self._limiter.test, item, identity)

    async def _retry_after(
        self,
        allowed: Callable[..., Awaitable[bool]],
        item: RateLimitItem | None,
        identity: tuple[str, ...],
    ) -> float | None:
        if item is None:
            return None
        try:
            if await allowed(item, *identity):
                return None
            stats = await self._limiter.get_window_stats(item, *identity)
        except StorageError as exc:
            log.warning("rate limits unavailable, request let through: %s", exc)
            return None
        return max(stats.reset_time - time.time(), 0.01)


def _too_many(detail: str, wait: float) -> HTTPException:
    return HTTPException(
        status_code=429,
        detail=f"{detail}; retry in {wait:.2f} s",
        headers={"Retry-After": str(math.ceil(wait))},
    )


async def authorize(request: Request) -> str:
    """The client's identity (a key id, or its address when keys are off), rate-limited.

    One dependency reading the headers itself, as `bearer` and `key_header` would: FastAPI's
    work per dependency (~5 % of a submission's CPU for the four this used to be) is paid once.
    Those two still describe the schemes in the OpenAPI document (`document_client_auth`).
    The address is the TCP peer's, or X-Forwarded-For's only from TRUSTED_PROXIES (cli.py).
    """
    resources: ApiResources = request.app.state.resources
    settings = resources.settings
    keys = settings.api_keys + settings.admin_api_keys
    limits: SharedRateLimits = request.app.state.rate_limits
    address = request.client.host if request.client else "unknown"
    request.state.admin = False
    if keys:
        failures = ("auth-failures", address)
        if (wait := await limits.blocked(limits.auth_failures, *failures)) is not None:
            raise _too_many("too many failed authentications from this address", wait)
        presented = _presented_key(request)
        key = matching_key(presented, keys) if presented else None
        if key is None:
            await limits.hit(limits.auth_failures, *failures)
            raise HTTPException(
                status_code=401,
                detail="missing or invalid API key: send `Authorization: Bearer <key>` "
                "or `X-API-Key: <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        client = key_id(key)
        request.state.admin = key in settings.admin_api_keys
    else:
        client = address
    if (wait := await limits.hit(limits.requests, "requests", client)) is not None:
        raise _too_many(f"rate limit of {limits.per_second:g} requests/s per client exceeded", wait)
    request.state.client_id = client
    return client


@dataclass(frozen=True)
class Caller:
    """Who is calling a client route: whose tasks and analyses it may see and change."""

    # The key's id when keys are on; None with authentication off (`trustcard dev`).
    owner: str | None
    admin: bool

    def may_see(self, owner: str | None) -> bool:
        """With keys on, a task is its submitter's (and the admin keys'); off, everyone's."""
        return self.owner is None or self.admin or owner == self.owner

    def require_admin(self, what: str) -> None:
        if self.owner is not None and not self.admin:
            raise HTTPException(status_code=403, detail=f"{what} needs an admin API key")


async def current_caller(request: Request) -> Caller:
    """The Caller `authorize` (a router dependency, resolved first) identified."""
    settings = request.app.state.resources.settings
    keyed = bool(settings.api_keys or settings.admin_api_keys)
    client: str | None = getattr(request.state, "client_id", None)
    return Caller(owner=client if keyed else None, admin=getattr(request.state, "admin", False))


CallerDep = Annotated[Caller, Depends(current_caller)]
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "Needs an admin API key (ADMIN_API_KEYS)"}
}


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
