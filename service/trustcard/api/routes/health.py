"""Liveness and dependency health: /health, /health/live, /health/ready, /health/detail.

/health and /health/ready (the probe) answer status and one `ok` per dependency: the Ingress
may route them. URLs, latencies and errors are on /health/detail, which needs an admin key
when keys are on (`trustcard dev`, keys off: open).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from trustcard import __version__
from trustcard.api.broker_memory import BrokerMemory
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
from trustcard.config import Settings, redact_url
from trustcard.observability.api_metrics import show_eviction_policy
from trustcard.redis_clients.eviction import read_policy_async

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


# Written on every probe, with a short TTL: a Redis at maxmemory (noeviction) refuses it as it
# refuses submissions, so readiness turns false with them (a PING still answers there).
WRITE_PROBE_KEY = "trustcard:health:write-probe"
WRITE_PROBE_TTL_MS = 10_000
# The last eviction problem logged per dependency: one line when it appears or changes.
_eviction_logged: dict[str, str | None] = {}


async def _check_redis(
    client: Redis,
    url: str,
    dependency: str,
    settings: Settings,
    memory: BrokerMemory | None = None,
) -> DependencyHealth:
    """Writable (a SET with TTL), answering in time, and not allowed to evict our keys."""
    limit_seconds = settings.REDIS_TIMEOUT_SECONDS
    redacted = redact_url(url)
    started = time.perf_counter()
    write_error = None
    try:
        async with asyncio.timeout(limit_seconds):
            try:
                await client.set(WRITE_PROBE_KEY, b"1", px=WRITE_PROBE_TTL_MS)
            except OutOfMemoryError as exc:
                write_error = f"full: Redis refuses writes at maxmemory ({exc})"
            latency = round((time.perf_counter() - started) * 1000, 2)
            eviction = await read_policy_async(client)
            # Submissions stop above the high watermark: the broker counts as full then.
            nearly_full = await memory.full(client) if memory and not write_error else None
    except TimeoutError:
        late = f"no answer within {limit_seconds:g} s"
        return DependencyHealth(ok=False, url=redacted, error=late)
    except UNREACHABLE as exc:
        return DependencyHealth(ok=False, url=redacted, error=f"{type(exc).__name__}: {exc}")
    problem = eviction.problem(dependency, url)
    enforced = problem is not None and settings.REDIS_EVICTION_POLICY_CHECK == "enforce"
    _report_eviction(dependency, eviction.policy, problem, enforced)
    errors = (write_error, nearly_full, problem if enforced else None)
    error = "; ".join(e for e in errors if e) or None
    return DependencyHealth(
        ok=error is None,
        url=redacted,
        latency_ms=latency,
        error=error,
        maxmemory_policy=eviction.policy,
        warning=None if enforced else problem,
    )


def _report_eviction(dependency: str, policy: str, problem: str | None, enforced: bool) -> None:
    show_eviction_policy(dependency.replace(" ", "_"), policy, problem is None)
    if _eviction_logged.get(dependency) == problem:
        return
    if problem is not None:
        log.log(logging.ERROR if enforced else logging.WARNING, "%s", problem)
    elif dependency in _eviction_logged:
        log.info("%s Redis: maxmemory-policy is %s now", dependency, policy)
    _eviction_logged[dependency] = problem


# The database gets the engine's 3 s connect timeout plus a little: its own error, not ours.
DATABASE_PING_SECONDS = 4.0


# SQLite writes its pages and WAL on the local disk. A rolled-back write never reaches it, and
# a committed one may reuse WAL pages after a checkpoint, so neither notices a full disk until
# the file must grow; free space on the database's filesystem does. (PostgreSQL: its server.)
SQLITE_MIN_FREE_BYTES = 1024 * 1024


def _select_one(session: Session) -> str | None:
    """SELECT 1, then, on SQLite, a problem when the database's disk is (nearly) full."""
    session.execute(text("SELECT 1"))
    bind = session.get_bind()
    url = bind.url if isinstance(bind, Engine) else bind.engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    directory = Path(url.database).resolve().parent
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    if free >= SQLITE_MIN_FREE_BYTES:
        return None
    return f"disk full: {free} bytes free on {directory} (SQLite needs room to write)"


async def _ping_database(res: ApiResources) -> DependencyHealth:
    url = redact_url(res.settings.DATABASE_URL)
    started = time.perf_counter()
    try:
        problem = await run_db(res, _select_one, DATABASE_PING_SECONDS)
    except DependencyUnavailable as exc:
        return DependencyHealth(ok=False, url=url, error=exc.reason)
    if problem is not None:
        return DependencyHealth(ok=False, url=url, error=problem)
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DependencyHealth(ok=True, url=url, latency_ms=latency)


async def _health(res: ResourcesDep) -> Health:
    settings = res.settings
    broker, backend, database = await asyncio.gather(
        _check_redis(res.broker, settings.broker_url, "broker", settings, res.broker_memory),
        _check_redis(res.backend, settings.result_backend_url, "result backend", settings),
        _ping_database(res),
    )
    healthy = broker.ok and backend.ok and database.ok
    return Health(
        status="ok" if healthy else "degraded",
        version=__version__,
        dependencies={"broker": broker, "result_backend": backend, "database": database},
    )


async def report_eviction_policies(res: ApiResources) -> None:
    """At start-up: the eviction-policy line in the log and metric, before any probe comes."""
    settings = res.settings
    await asyncio.gather(
        _check_redis(res.broker, settings.broker_url, "broker", settings, res.broker_memory),
        _check_redis(res.backend, settings.result_backend_url, "result backend", settings),
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
    """Readiness probe: 200 only while broker, backend and database answer and accept writes,
    and Redis may not evict our keys (REDIS_EVICTION_POLICY_CHECK)."""
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
