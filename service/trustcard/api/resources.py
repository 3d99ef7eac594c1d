"""Connections the API holds for its lifetime: async Redis clients, the Celery app, the database."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from celery import Celery
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.orm import Session, sessionmaker

from trustcard.api.argument_repr import use_for_task_messages
from trustcard.api.broker_memory import BrokerMemory
from trustcard.api.broker_publish import LoopPublisher
from trustcard.api.long_poll_slots import LongPollSlots
from trustcard.api.record_and_publish import RecordAndPublish
from trustcard.api.result_subscriptions import MAX_IDLE, SubscriberPool
from trustcard.config import Settings
from trustcard.db.engine import create_db_engine
from trustcard.redis_clients.connection import async_client

log = logging.getLogger(__name__)


@dataclass
class ApiResources:
    settings: Settings
    celery: Celery
    broker: Redis
    backend: Redis
    # Long-polls' subscriber connections, on a pool of their own (see open_resources).
    long_polls: Redis
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

    # Concurrent long-polls per client and in all (see long_poll_slots).
    long_poll_slots: LongPollSlots = field(init=False)
    # Submissions stop before the broker is full (see broker_memory).
    broker_memory: BrokerMemory = field(init=False)

    # Record and message in one script, when broker and backend share a server (else None).
    record_and_publish: RecordAndPublish | None = field(init=False)

    def __post_init__(self) -> None:
        self.loop_publisher = LoopPublisher(self.celery, self.broker)
        self.record_and_publish = RecordAndPublish.for_clients(
            self.broker,
            self.backend,
            self.settings.REDIS_WAIT_REPLICAS,
            self.settings.REDIS_WAIT_TIMEOUT_MS,
        )
        if self.settings.REDIS_WAIT_REPLICAS and self.record_and_publish is None:
            log.warning(
                "REDIS_WAIT_REPLICAS is set but the broker and the result backend are on "
                "different servers: submissions are not followed by WAIT (one-script path only)"
            )
        self.subscribers = SubscriberPool(self.long_polls, self.settings.REDIS_TIMEOUT_SECONDS)
        self.long_poll_slots = LongPollSlots(
            self.settings.LONG_POLL_MAX, self.settings.LONG_POLL_PER_CLIENT
        )
        self.broker_memory = BrokerMemory(self.settings.REDIS_MEMORY_HIGH_WATERMARK)

    async def aclose(self) -> None:
        await self.subscribers.aclose()
        self.loop_publisher.close()
        self.publisher.shutdown(wait=False)
        self.database_threads.shutdown(wait=False)
        self.sessions.kw["bind"].dispose()
        await self.broker.aclose()
        await self.backend.aclose()
        await self.long_polls.aclose()


PUBLISH_THREADS = 2
HEALTH_CHECK_SECONDS = 10
# Fewer than the engine's pool (5), so a database call never waits for a connection.
DATABASE_THREADS = 4


def redis_client(
    settings: Settings, url: str, timeout: float, max_connections: int | None = None
) -> Redis:
    """An async client that fails within `timeout` instead of retrying for long."""
    return async_client(
        settings,
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        # One immediate reconnect covers a pooled connection that Redis closed (restart, idle
        # `timeout`). The asyncio Retry: the sync one's call_with_retry returns the coroutine
        # unawaited, so it never retried (issue 14.5). Not on timeouts: the command may have run.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        # A connection idle this long is PINGed before use: a stale one is replaced before a
        # write is sent on it.
        health_check_interval=HEALTH_CHECK_SECONDS,
        max_connections=max_connections,
    )


def open_resources(settings: Settings, celery: Celery) -> ApiResources:
    # The messages' argsrepr/kwargsrepr, same text, without saferepr's cost for flat arguments.
    use_for_task_messages()
    return ApiResources(
        settings=settings,
        celery=celery,
        broker=redis_client(settings, settings.broker_url, settings.REDIS_TIMEOUT_SECONDS),
        backend=redis_client(settings, settings.result_backend_url, settings.REDIS_TIMEOUT_SECONDS),
        # Long-polls hold a connection each for up to 30 s: a pool of their own, which they can
        # exhaust without touching the one submissions, reads and probes use.
        # Sized for every admitted wait plus the idle and recycling subscribers kept between.
        long_polls=redis_client(
            settings,
            settings.result_backend_url,
            settings.REDIS_TIMEOUT_SECONDS,
            settings.LONG_POLL_MAX + 2 * MAX_IDLE,
        ),
        # Creating the engine opens no connection: the first query does.
        sessions=sessionmaker(create_db_engine(settings.DATABASE_URL), expire_on_commit=False),
    )
