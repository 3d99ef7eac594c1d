"""Connections the API holds for its lifetime: async Redis clients and the Celery app."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from celery import Celery
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from trustcard.config import Settings


@dataclass
class ApiResources:
    settings: Settings
    celery: Celery
    broker: Redis
    backend: Redis
    # kombu publishes synchronously; a few dedicated threads keep that off the event loop.
    # Few on purpose: Starlette's 40-thread pool lets 64 concurrent publishes contend for the
    # GIL and kombu's 10 pooled connections (wrk, 64 clients: p99 75-80 ms here vs 129-145 ms).
    publisher: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish")
    )

    async def aclose(self) -> None:
        self.publisher.shutdown(wait=False)
        await self.broker.aclose()
        await self.backend.aclose()


PUBLISH_THREADS = 2


def redis_client(url: str, timeout: float) -> Redis:
    """An async client that fails within `timeout` instead of retrying for long."""
    return Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        # One immediate reconnect covers a pooled connection that Redis closed on restart.
        retry=Retry(NoBackoff(), retries=1),
        health_check_interval=30,
    )


def open_resources(settings: Settings, celery: Celery) -> ApiResources:
    return ApiResources(
        settings=settings,
        celery=celery,
        broker=redis_client(settings.broker_url, settings.REDIS_TIMEOUT_SECONDS),
        backend=redis_client(settings.result_backend_url, settings.REDIS_TIMEOUT_SECONDS),
    )
