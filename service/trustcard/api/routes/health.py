"""Liveness and dependency health: /health, /health/live, /health/ready, /health/detail.

/health and /health/ready (the probe) answer status and one `ok` per dependency: the Ingress
may route them. URLs, latencies and errors are on /health/detail, which needs an admin key
when keys are on (`trustcard dev`, keys off: open).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from trustcard import __version__
from trustcard.api.database import run_db
from trustcard.api.deps import ResourcesDep
from trustcard.api.errors import DependencyUnavailable
from trustcard.api.resources import ApiResources
from trustcard.api.schemas import (
    DependencyHealth,
    DependencyOk,
    Health,
    HealthSummary,
    Responses,
)
from trustcard.api.security import ADMIN_ONLY, CallerDep
from trustcard.api.task_queue import UNREACHABLE
from trustcard.config import redact_url

router = APIRouter(tags=["health"])


async def _ping(client: Redis, url: str, limit_seconds: float) -> DependencyHealth:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit_seconds):
            await client.ping()
    except TimeoutError:
        return DependencyHealth(
            ok=False, url=redact_url(url), error=f"no answer within {limit_seconds:g} s"
        )
    except UNREACHABLE as exc:
        return DependencyHealth(ok=False, url=redact_url(url), error=f"{type(exc).__name__}: {exc}")
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DependencyHealth(ok=True, url=redact_url(url), latency_ms=latency)


# The database gets the engine's 3 s connect timeout plus a little: its own error, not ours.
DATABASE_PING_SECONDS = 4.0


def _select_one(session: Session) -> None:
    session.execute(text("SELECT 1"))


async def _ping_database(res: ApiResources) -> DependencyHealth:
    url = redact_url(res.settings.DATABASE_URL)
    started = time.perf_counter()
    try:
        await run_db(res, _select_one, DATABASE_PING_SECONDS)
    except DependencyUnavailable as exc:
        return DependencyHealth(ok=False, url=url, error=exc.reason)
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DependencyHealth(ok=True, url=url, latency_ms=latency)


async def _health(res: ResourcesDep) -> Health:
    settings = res.settings
    broker, backend, database = await asyncio.gather(
        _ping(res.broker, settings.broker_url, settings.REDIS_TIMEOUT_SECONDS),
        _ping(res.backend, settings.result_backend_url, settings.REDIS_TIMEOUT_SECONDS),
        _ping_database(res),
    )
    healthy = broker.ok and backend.ok and database.ok
    return Health(
        status="ok" if healthy else "degraded",
        version=__version__,
        dependencies={"broker": broker, "result_backend": backend, "database": database},
    )


def _answer(body: Health | HealthSummary) -> JSONResponse:
    return JSONResponse(status_code=200 if body.status == "ok" else 503, content=body.model_dump())


async def _summary(res: ResourcesDep) -> JSONResponse:
    detail = await _health(res)
    deps = {name: DependencyOk(ok=dep.ok) for name, dep in detail.dependencies.items()}
    return _answer(HealthSummary(status=detail.status, dependencies=deps))


SUMMARY_RESPONSES: Responses = {
    503: {"model": HealthSummary, "description": "A dependency is down (named in the body)"}
}


@router.get("/health", response_model=HealthSummary, responses=SUMMARY_RESPONSES)
async def health(res: ResourcesDep) -> JSONResponse:
    """The process answers, plus whether the broker, result backend and database do."""
    return await _summary(res)


@router.get("/health/ready", response_model=HealthSummary, responses=SUMMARY_RESPONSES)
async def readiness(res: ResourcesDep) -> JSONResponse:
    """Readiness probe: 200 only while broker, backend and database answer."""
    return await _summary(res)


# Included with the client routes' authentication (main.py), unlike the probes above.
detail_router = APIRouter(tags=["health"])


@detail_router.get(
    "/health/detail",
    response_model=Health,
    responses={
        503: {"model": Health, "description": "A dependency is down (with the error)"},
        **ADMIN_ONLY,
    },
)
async def health_detail(res: ResourcesDep, caller: CallerDep) -> JSONResponse:
    """Each dependency's redacted URL, latency and error: for operators (an admin key)."""
    caller.require_admin("the health detail")
    return _answer(await _health(res))


@router.get("/health/live")
async def liveness() -> dict[str, str]:
    """Liveness probe: the process serves requests (a Redis outage must not restart the API)."""
    return {"status": "alive"}
