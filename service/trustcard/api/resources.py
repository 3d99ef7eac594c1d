"""Connections the API holds for its lifetime: async Redis clients and the Celery app."""

from __future__ import annotations

from dataclasses import dataclass

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

    async def aclose(self) -> None:
        await self.broker.aclose()
        await self.backend.aclose()


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
