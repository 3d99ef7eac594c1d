"""Worker-side hooks connected through Celery signals."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery.signals import (
    before_task_publish,
    celeryd_after_setup,
    setup_logging,
    task_received,
    task_revoked,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from celery.worker import state as worker_state
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from trustcard.config import get_settings
from trustcard.observability.analysis_metrics import start_analysis_metrics
from trustcard.observability.logs import EARLY_LOGGING_ENV, configure_logging, say_as_json
from trustcard.observability.tracing import (
    instrument_worker_process,
    log_worker_tracing,
    prepare_worker_tracing,
    stop_worker_tracing,
)
from trustcard.observability.worker_metrics import PUBLISHED_AT_HEADER, WORKER_METRICS
from trustcard.observability.worker_server import close_inherited_socket
from trustcard.redis_clients.connection import sync_client
from trustcard.redis_clients.eviction import read_policy
from trustcard.redis_clients.sentinel_watch import SentinelWatch, start_sentinel_watch
from trustcard.task_model.registry import recent_cancellations
from trustcard.worker.worker_pool import freeze_parent_heap

log = logging.getLogger(__name__)

# The API's metric of the same name, read once at the worker's start (see redis_clients.eviction).
EVICTION_POLICY_SAFE = Gauge(
    "trustcard_redis_eviction_policy_safe",
    "1 when the Redis server's maxmemory-policy (label policy) cannot evict our keys, else 0",
    ["dependency", "policy"],
    registry=WORKER_METRICS.registry,
)

# The API's metric of the same name: switches the worker's main process followed (the pool
# processes follow them too, and log each).
REDIS_MASTER_SWITCHES = Counter(
    "trustcard_redis_master_switches_total",
    "Redis master switches (Sentinel +switch-master) this process followed",
    registry=WORKER_METRICS.registry,
)
# This process's Sentinel watch (redis_clients.sentinel_watch); None without Sentinel.
_sentinel_watch: SentinelWatch | None = None


@celeryd_after_setup.connect
def load_cancellations(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Teach a starting worker the ids cancelled while it was not listening.

    Celery keeps revokes in worker memory only; a worker started after a cancel (a new pod,
    an autoscaled replica) would otherwise run a task the client already cancelled.
    """
    app = instance.app
    try:
        ids = recent_cancellations(app.backend.client, int(app.conf.result_expires))
    except Exception as exc:  # Redis may still be starting; revokes then arrive by broadcast
        log.warning("could not load cancelled task ids from the result backend: %s", exc)
        return
    for task_id in ids:
        worker_state.revoked.add(task_id)
    if ids:
        log.info("loaded %d cancelled task ids", len(ids))


@celeryd_after_setup.connect
def check_eviction_policy(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Say once, at start, when a Redis may evict our keys (see redis_clients.eviction)."""
    settings = get_settings()
    # Through redis_clients.connection: TLS options, and the master the Sentinels name.
    broker = sync_client(settings, settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
    for dependency, url, client in (
        ("broker", settings.broker_url, broker),
        ("result_backend", settings.result_backend_url, instance.app.backend.client),
    ):
        try:
            eviction = read_policy(client)
        except (RedisError, OSError) as exc:  # down at start: the API's probes report it
            log.warning("could not read the %s Redis maxmemory-policy: %s", dependency, exc)
            continue
        EVICTION_POLICY_SAFE.labels(dependency, eviction.policy).set(int(eviction.safe))
        problem = eviction.problem(dependency.replace("_", " "), url)
        if problem is not None:
            enforced = settings.REDIS_EVICTION_POLICY_CHECK == "enforce"
            log.log(logging.ERROR if enforced else logging.WARNING, "%s", problem)
    broker.close()


@before_task_publish.connect
def stamp_publish_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Every publisher using our app stamps the message, so workers can measure queue wait."""
    if headers is not None:
        headers.setdefault(PUBLISHED_AT_HEADER, time.time())


@task_received.connect
def count_received(request: Any = None, **_: Any) -> None:
    WORKER_METRICS.on_received(request.name)


@task_revoked.connect
def count_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    WORKER_METRICS.on_revoked(getattr(sender, "name", None) or request.task)


@worker_ready.connect
def mark_ready(**_: Any) -> None:
    WORKER_METRICS.up.set(1)
    log_worker_tracing()
    # Start-up garbage is done; freezing it makes the gc.collect() before each fork cheap.
    freeze_parent_heap()


@worker_shutting_down.connect
def mark_shutting_down(**_: Any) -> None:
    WORKER_METRICS.up.set(0)


@worker_init.connect
def prepare_main_process(**_: Any) -> None:
    prepare_worker_tracing()
    # Before the pool forks: children send each analysis's outcome to this process.
    start_analysis_metrics(WORKER_METRICS.registry)
    # The consumer's and producers' broker connections follow a Sentinel master switch, at the
    # switch only. Cut when the failover starts, a BRPOP whose reply was in flight lost its
    # message (popped, never delivered: kombu's BRPOP window, docs/upstream-redis-outages.md
    # section 6; 1 of 400 in 1 of 3 runs), and holding new connections would refuse the
    # unacked copy written after a pop the same way. Cut at the switch, a message popped on
    # the old master after the promotion is still queued on the new one (it may run twice).
    _watch_sentinels(on_switch=lambda _: REDIS_MASTER_SWITCHES.inc(), hold_on_start=False)


@worker_shutdown.connect
def finish_main_process(**_: Any) -> None:
    # After the pool has stopped: export the spans the children handed over last.
    stop_worker_tracing()
    _stop_sentinel_watch()


@worker_process_init.connect
def init_pool_child(**_: Any) -> None:
    close_inherited_socket()
    instrument_worker_process()
    # The result backend's connections (task states) live here: a watch of their own, since
    # the parent's threads are not forked.
    _watch_sentinels()


@worker_process_shutdown.connect
def finish_pool_child(**_: Any) -> None:
    _stop_sentinel_watch()


def _watch_sentinels(**kwargs: Any) -> None:
    global _sentinel_watch
    _sentinel_watch = start_sentinel_watch(get_settings(), **kwargs)


def _stop_sentinel_watch() -> None:
    if _sentinel_watch is not None:
        _sentinel_watch.stop(timeout=0)


@celeryd_after_setup.connect
def log_startup_banner(instance: Any = None, **_: Any) -> None:
    """JSON mode runs `celery --quiet` (the banner is printed, not logged): log its facts."""
    if instance is not None and getattr(instance, "quiet", False):
        log.info("worker start-up:%s", instance.startup_info(artlines=False))


@setup_logging.connect
def use_our_logging(loglevel: Any = None, **_: Any) -> None:
    """Replace Celery's log setup: same handler and formats (text or JSON) as the API."""
    settings = get_settings()
    configure_logging(loglevel or settings.LOG_LEVEL, settings.LOG_FORMAT)
    if settings.LOG_FORMAT == "json":
        # Celery prints its shutdown messages outside logging: JSON lines like the rest.
        import celery.apps.worker

        celery.apps.worker.safe_say = say_as_json


# `trustcard worker` asks for it: Celery warns (running as root, pickle) before it sets logging
# up, so our handler must be in place from the app's import.
if os.environ.pop(EARLY_LOGGING_ENV, ""):
    use_our_logging()
