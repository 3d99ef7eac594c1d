"""The Celery app `trustcard`: broker/backend, routes, limits and reliability settings."""

from __future__ import annotations

import socket
from typing import Any

from celery import Celery

from trustcard.config import Settings, get_settings
from trustcard.observability.worker_server import MetricsServerStep
from trustcard.redis_clients.broker_transport import use_for_redis_urls
from trustcard.redis_clients.connection import celery_redis_config, sentinel_transport_options
from trustcard.task_model.names import APP_NAME, QUEUE
from trustcard.worker.health import HeartbeatStep

TASK_MODULES = ["trustcard.tasks.test_tasks", "trustcard.tasks.analysis_tasks"]
# Our backend subclass (redis_clients/result_backend.py), chosen by Celery's `<class>+<url>` form.
BACKEND_CLASS = "trustcard.redis_clients.result_backend:TrustcardRedisBackend"
# The same behind Redis Sentinel (REDIS_SENTINEL_HOSTS set).
SENTINEL_BACKEND_CLASS = "trustcard.redis_clients.result_backend:TrustcardSentinelBackend"
CHECKED_TASK_CLASS = "trustcard.tasks.message_checks:CheckedTask"
# Outages: a broker connection that survives a lost Redis with a task running (see module).
AMQP_CLASS = "trustcard.redis_clients.broker_connection:BrokerAMQP"
# A connection idle this long is PINGed before use; keepalive declares a silent peer dead
# after 10 + 3 x 5 = 25 s (docs/reliability.md, "Outages").
HEALTH_CHECK_SECONDS = 10
KEEPALIVE_OPTIONS = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from our Settings; every line says why it is set."""
    socket_options = {
        # Fail fast instead of hanging when Redis is unreachable (API answers 503 quickly).
        "socket_connect_timeout": 2,
        # A half-open connection must not block a publish forever; > kombu's 1 s BRPOP timeout.
        "socket_timeout": 5,
    }
    # The Sentinel connections get the same bounds and keepalive (see sentinel_kwargs).
    sentinel_socket_options = {
        **socket_options,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE_OPTIONS,
    }
    return {
        # URLs and TLS options of broker and result backend (one place: redis_clients.connection).
        **celery_redis_config(settings, BACKEND_CLASS, SENTINEL_BACKEND_CLASS),
        # Seed contract: every task family runs on the one `analysis` queue.
        "task_routes": {"analysis.*": {"queue": QUEUE}, "test.*": {"queue": QUEUE}},
        # Tasks sent by name without a route (plain clients) land where workers listen.
        "task_default_queue": QUEUE,
        # Seed contract: 5 min hard limit kills a stuck task; 4 min soft limit lets it clean up.
        "task_time_limit": settings.TASK_TIME_LIMIT,
        "task_soft_time_limit": settings.TASK_SOFT_TIME_LIMIT,
        # Seed contract: a pool process reserves one task at a time, so long tasks don't hoard.
        "worker_prefetch_multiplier": settings.WORKER_PREFETCH_MULTIPLIER,
        # Seed contract: recycle children to contain leaks in ML libraries (0 disables).
        "worker_max_tasks_per_child": settings.WORKER_MAX_TASKS_PER_CHILD or None,
        # Cold shutdown waits this long for running tasks, then requeues them (0: no wait).
        "worker_soft_shutdown_timeout": settings.WORKER_SOFT_SHUTDOWN_TIMEOUT,
        # None lets Celery use the CPU count; the chart pins it to the pod's CPU request.
        "worker_concurrency": settings.WORKER_CONCURRENCY,
        # Ack after the task ends: a worker crash leaves the message in Redis for redelivery.
        "task_acks_late": True,
        # If a pool child dies mid-task (OOM, SIGKILL), requeue instead of marking it failed.
        "task_reject_on_worker_lost": True,
        # Report STARTED so the API can say `processing` instead of `pending`.
        "task_track_started": True,
        # Broker connection behaviour, shared by publishers and consumers.
        "broker_transport_options": {
            # Unacked tasks come back after this; above the hard limit or long tasks run twice.
            "visibility_timeout": settings.BROKER_VISIBILITY_TIMEOUT,
            # Look for such tasks on every 10 s tick, not kombu's every 10th (~100 s): after a
            # crash, redelivery takes visibility_timeout + at most 10 s (one cheap ZRANGE).
            "unacked_restore_throttle": 1,
            **socket_options,
            # Outages: dead sockets found by TCP keepalive, idle ones PINGed before reuse.
            "socket_keepalive": True,
            "socket_keepalive_options": KEEPALIVE_OPTIONS,
            "health_check_interval": HEALTH_CHECK_SECONDS,
            # Sentinel: master name and how to reach the Sentinels ({} without them).
            **sentinel_transport_options(settings, **sentinel_socket_options),
        },
        "result_backend_transport_options": {
            **socket_options,
            **sentinel_transport_options(settings, **sentinel_socket_options),
        },
        # -- Outages (docs/upstream-redis-outages.md): Celery 5.7's Redis backend ignores the
        # transport options above; it reads these. Keepalive + PING bound a dead connection.
        "redis_socket_timeout": socket_options["socket_timeout"],
        "redis_socket_connect_timeout": socket_options["socket_connect_timeout"],
        "redis_socket_keepalive": True,
        "redis_backend_health_check_interval": HEALTH_CHECK_SECONDS,
        # -- end outages
        # Outages: running tasks keep running across a broker reconnect and ack on the new
        # connection; redis_clients.broker_connection keeps their messages from being requeued
        # meanwhile (cancelling made them wait for the visibility timeout: docs/reliability.md).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Keep retrying the broker at start-up (Redis may start after us on Kubernetes).
        "broker_connection_retry_on_startup": True,
        # Never give up reconnecting: the liveness probe, not Celery, decides to restart.
        "broker_connection_max_retries": None,
        # A Redis blip while storing a result retries instead of failing a finished task.
        "result_backend_always_retry": True,
        # Outages: a task that ran through a reconnect waits for Redis to store its result
        # (about 55 s in all, at most ~110 s) rather than run again later.
        "result_backend_max_retries": 60,
        # Outages: retry at least every 2 s (Celery's cap is 10 s), so a finished task's write
        # lands, and frees its pool slot, within 2 s of Redis's return instead of up to 10 s;
        # one still waiting at the hard time limit fails (docs/upstream-redis-outages.md, 4).
        "result_backend_max_sleep_between_retries_ms": 2000,
        # Results (and our issued-id records) disappear together after this.
        "result_expires": settings.RESULT_EXPIRES,
        # JSON only: plain clients in other languages can send tasks; no pickle from the wire.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Publishing must not stall the API for long while Redis is down; it answers 503.
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        # -- Task events (issue 16): what Flower shows tasks from (worker banner `task events`);
        # off by default, each task state is one more Redis PUBLISH (docs/flower.md).
        "worker_send_task_events": settings.WORKER_SEND_TASK_EVENTS,
        "task_send_sent_event": settings.WORKER_SEND_TASK_EVENTS,
        # -- end task events
        # Celery's prefork pool plus per-job metrics and stall-free child recycling.
        "worker_pool": "trustcard.worker.worker_pool:TaskPool",
        "enable_utc": True,
    }


def create_celery_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (the module-level app uses the environment)."""
    # kombu's Redis transport, tolerating a full Redis (see redis_clients.broker_transport).
    use_for_redis_urls()
    # Every task checks the shape of its messages before Celery unpacks them (message_checks).
    app = Celery(APP_NAME, include=TASK_MODULES, task_cls=CHECKED_TASK_CLASS)
    app.conf.update(celery_config(settings or get_settings()))
    app.amqp_cls = AMQP_CLASS
    # Liveness heartbeat for Kubernetes (a no-op unless WORKER_HEARTBEAT_FILE is set).
    app.steps["consumer"].add(HeartbeatStep)
    # The worker's /metrics, served by the main process.
    app.steps["worker"].add(MetricsServerStep)
    return app


celery_app = create_celery_app()

# Connect worker-side signal handlers wherever the app is loaded (worker and API alike).
from trustcard.worker import signals  # noqa: E402, F401
