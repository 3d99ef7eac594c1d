"""Connections the API holds for its lifetime: async Redis clients, the Celery app, the database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from celery import Celery
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.orm import Session, sessionmaker

from trustcard.api.argument_repr import use_for_task_messages
from trustcard.api.broker_publish import LoopPublisher
from trustcard.api.record_and_publish import RecordAndPublish
from trustcard.api.result_subscriptions import SubscriberPool
from trustcard.config import Settings
from trustcard.db.engine import create_db_engine
from trustcard.redis_connection import async_client


@dataclass
class ApiResources:
    settings: Settings
    celery: Celery
    broker: Redis
    backend: Redis
    # Sync SQLAlchemy sessions, used on `database_threads` only (see api/database.py).
    sessions: sessionmaker[Session]
    # kombu publishes synchronously; a few dedicated threads keep that off the event loop.
    # Few on purpose: Starlette's 40-thread pool lets 64 concurrent publishes contend for the
    # GIL and kombu's 10 pooled connections (wrk, 64 clients: p99 75-80 ms here vs 129-145 ms).
    publisher: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish")
    )
    database_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(DATABASE_THREADS, thread_name_prefix="database")
    )

    # Publishes from the event loop once its kombu channel is open (see broker_publish).
    loop_publisher: LoopPublisher = field(init=False)

    # Long-poll subscriber connections, kept open between waits (see result_subscriptions).
    subscribers: SubscriberPool = field(init=False)

    # Record and message in one script, when broker and backend share a server (else None).
    record_and_publish: RecordAndPublish | None = field(init=False)

    def __post_init__(self) -> None:
        self.loop_publisher = LoopPublisher(self.celery, self.broker)
        self.record_and_publish = RecordAndPublish.for_clients(self.broker, self.backend)
        self.subscribers = SubscriberPool(self.backend, self.settings.REDIS_TIMEOUT_SECONDS)

    async def aclose(self) -> None:
        await self.subscribers.aclose()
        self.loop_publisher.close()
        self.publisher.shutdown(wait=False)
        self.database_threads.shutdown(wait=False)
        self.sessions.kw["bind"].dispose()
        await self.broker.aclose()
        await self.backend.aclose()


PUBLISH_THREADS = 2
# Fewer than the engine's pool (5), so a database call never waits for a connection.
DATABASE_THREADS = 4


def redis_client(settings: Settings, url: str, timeout: float) -> Redis:
    """An async client that fails within `timeout` instead of retrying for long."""
    return async_client(
        settings,
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        # One immediate reconnect covers a pooled connection that Redis closed on restart.
        retry=Retry(NoBackoff(), retries=1),
        health_check_interval=30,
    )


def open_resources(settings: Settings, celery: Celery) -> ApiResources:
    # The messages' argsrepr/kwargsrepr, same text, without saferepr's cost for flat arguments.
    use_for_task_messages()
    return ApiResources(
        settings=settings,
        celery=celery,
        broker=redis_client(settings, settings.broker_url, settings.REDIS_TIMEOUT_SECONDS),
        backend=redis_client(settings, settings.result_backend_url, settings.REDIS_TIMEOUT_SECONDS),
        # Creating the engine opens no connection: the first query does.
        sessions=sessionmaker(create_db_engine(settings.DATABASE_URL), expire_on_commit=False),
    )
