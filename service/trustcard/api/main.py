"""FastAPI app factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from trustcard import __version__
from trustcard.api.errors import install_error_handlers
from trustcard.api.request_guard import RequestGuard
from trustcard.api.resources import open_resources
from trustcard.api.routes import analysis, claims, health, metrics, tasks, test_tasks
from trustcard.api.security import (
    CLIENT_ROUTE_RESPONSES,
    SharedRateLimits,
    authorize,
    document_client_auth,
    documented_auth,
)
from trustcard.celery_app import create_celery_app
from trustcard.config import Settings, get_settings, redact_url
from trustcard.observability.api_metrics import REDIS_MASTER_SWITCHES
from trustcard.observability.tracing import flush_tracing, instrument_api
from trustcard.redis_clients.sentinel_watch import start_sentinel_watch

log = logging.getLogger(__name__)

DESCRIPTION = """Queue TrustCard analyses as Celery tasks on Redis and follow them.

Interactive docs (/docs, /redoc) load their JavaScript from a CDN; offline, read /openapi.json."""


# The OpenAPI document's title, version and description.
DOCUMENT: dict[str, Any] = {
    "title": "TrustCard task service",
    "version": __version__,
    "description": DESCRIPTION,
}


def _include_routes(app: FastAPI, settings: Settings, client_auth: Any) -> None:
    """Probes, scrapes and the OpenAPI document stay open; task routes need a key if keys exist."""
    app.include_router(health.router)
    app.include_router(metrics.router)
    client_routes = [client_auth]
    if settings.ENABLE_TEST_ENDPOINTS:
        app.include_router(
            test_tasks.router, dependencies=client_routes, responses=CLIENT_ROUTE_RESPONSES
        )
    app.include_router(tasks.router, dependencies=client_routes, responses=CLIENT_ROUTE_RESPONSES)
    for router in (analysis.router, claims.router, health.detail_router):
        app.include_router(router, dependencies=client_routes, responses=CLIENT_ROUTE_RESPONSES)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; connections open in the lifespan, so building has no side effects."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = open_resources(settings, create_celery_app(settings))
        app.state.resources = resources
        # In Redis (the broker's server), so every API replica counts against the same limits.
        app.state.rate_limits = SharedRateLimits(settings, resources.broker.connection_pool)
        log.info(
            "trustcard API %s: broker %s, result backend %s, test endpoints %s",
            __version__,
            redact_url(settings.broker_url),
            redact_url(settings.result_backend_url),
            "on" if settings.ENABLE_TEST_ENDPOINTS else "off",
        )
        log.info(
            "client authentication %s, rate limit %s",
            f"on ({len(settings.api_keys)} API keys)" if settings.api_keys else "off",
            f"{settings.RATE_LIMIT_PER_SECOND:g}/s burst {settings.RATE_LIMIT_BURST} per client"
            if settings.RATE_LIMIT_PER_SECOND
            else "off",
        )
        # A Redis that may evict our keys is logged at once (issue 14.4), not at the first probe.
        eviction_check = asyncio.create_task(health.report_eviction_policies(resources))
        # Sentinel: the clients follow a master switch at once (None without Sentinel).
        sentinel_watch = start_sentinel_watch(
            settings, on_switch=lambda _: REDIS_MASTER_SWITCHES.inc()
        )
        try:
            yield
        finally:
            if sentinel_watch is not None:
                sentinel_watch.stop(timeout=0)
            eviction_check.cancel()
            await resources.aclose()
            flush_tracing()

    app = FastAPI(
        **DOCUMENT,
        lifespan=lifespan,
        # Tracing is the OpenTelemetry instrumentor's (instrument_api), which FastAPI's native
        # telemetry defers to anyway; off, it stops probing the providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # `/tasks?limit=5` answered a 307 to http://... behind a TLS Ingress: collection routes
        # answer on both forms instead (see the routes), anything else unknown is a 404.
        redirect_slashes=False,
        # No max_body_size: RequestGuard enforces it with the query-string limit, in one layer.
    )
    install_error_handlers(app)
    # Size limits (413 before any route runs) and request metrics (the 413s, 401s and 429s too).
    app.add_middleware(
        RequestGuard,
        max_query_bytes=settings.MAX_QUERY_STRING_BYTES,
        max_body_bytes=settings.MAX_REQUEST_BODY_BYTES,
    )
    _include_routes(app, settings, Depends(authorize))
    # Only its OpenAPI document is used: the same routes, documenting the API-key schemes.
    documented = FastAPI(**DOCUMENT, openapi_url=None, docs_url=None, redoc_url=None)
    _include_routes(documented, settings, Depends(documented_auth))
    document_client_auth(app, documented)
    instrument_api(app)
    return app
