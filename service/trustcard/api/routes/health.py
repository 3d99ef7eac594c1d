"""Liveness and dependency health: /health, /health/live, /health/ready."""

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
from trustcard.api.schemas import DependencyHealth, Health, Responses
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


async def _health(res: ResourcesDep) -> JSONResponse:
    settings = res.settings
    broker, backend, database = await asyncio.gather(
        _ping(res.broker, settings.broker_url, settings.REDIS_TIMEOUT_SECONDS),
        _ping(res.backend, settings.result_backend_url, settings.REDIS_TIMEOUT_SECONDS),
        _ping_database(res),
    )
    healthy = broker.ok and backend.ok and database.ok
    body = Health(
        status="ok" if healthy else "degraded",
        version=__version__,
        dependencies={"broker": broker, "result_backend": backend, "database": database},
    )
    return JSONResponse(status_code=200 if healthy else 503, content=body.model_dump())


HEALTH_RESPONSES: Responses = {
    503: {"model": Health, "description": "A dependency is down (named in the body)"}
}


@router.get("/health", response_model=Health, responses=HEALTH_RESPONSES)
async def health(res: ResourcesDep) -> JSONResponse:
    """The process answers, plus the state of the Redis broker, result backend and database."""
    return await _health(res)


@router.get("/health/ready", response_model=Health, responses=HEALTH_RESPONSES)
async def readiness(res: ResourcesDep) -> JSONResponse:
    """Readiness probe: 200 only while broker, backend and database answer."""
    return await _health(res)


@router.get("/health/live")
async def liveness() -> dict[str, str]:
    """Liveness probe: the process serves requests (a Redis outage must not restart the API)."""
    return {"status": "alive"}
