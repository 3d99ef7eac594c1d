"""A plain Celery app: the service's broker, backend and worker settings, no trustcard code.

Stock prefork pool. The worker is `celery -A bench.raw_app:app worker --concurrency 2`; the
broker, backend and max-tasks-per-child come from BENCH_BROKER_URL, BENCH_BACKEND_URL and
BENCH_MAX_TASKS_PER_CHILD (0 turns recycling off).
"""

from __future__ import annotations

import os

from celery import Celery

QUEUE = "celery"
TASK = "bench.noop"

app = Celery(
    "bench_raw",
    broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_BACKEND_URL", "redis://127.0.0.1:6379/1"),
)
# The settings of trustcard.celery_app that change how tasks flow; not its pool or backend class.
app.conf.update(
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_track_started=True,
    # The service's limits: the pool arms a soft and a hard timer per task (kombu keeps each
    # cancelled timer in its heap until it would have fired, so these cost memory too).
    task_time_limit=300,
    task_soft_time_limit=240,
    worker_max_tasks_per_child=int(os.environ.get("BENCH_MAX_TASKS_PER_CHILD", "50")) or None,
    worker_concurrency=2,
    broker_transport_options={"visibility_timeout": 600, "socket_timeout": 5},
    result_expires=86_400,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    enable_utc=True,
)


def _noop() -> None:
    """The task: nothing, so only Celery's own cost is measured."""


noop = app.task(name=TASK)(_noop)
