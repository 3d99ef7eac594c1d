"""Celery's Redis result backend without per-submission pub/sub subscriptions."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from billiard import pool as billiard_pool
from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend
from opentelemetry import trace

from trustcard.redis_clients.write_refusal import (
    SentinelMasterConnection,
    SentinelMasterSSLConnection,
)

log = logging.getLogger(__name__)

# The event on the current span (the task's run span, or a stage span for progress) when a
# state was written; attribute celery.state says which.
RESULT_STORED_EVENT = "result stored"


class TrustcardRedisBackend(RedisBackend):  # type: ignore[misc]
    """RedisBackend that does not subscribe to each task's result channel on submission.

    The stock backend SUBSCRIBEs to `celery-task-meta-<id>` for every task a process sends,
    expecting the sender to wait on `.get()`. The API never does (it reads state by key), so
    those subscriptions would only pile up in the API process and in Redis.
    """

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        """Store, then mark the current span, so a trace shows when each state was written.

        An event rather than a span of its own: two store spans per task (STARTED, SUCCESS)
        were two thirds of a task's spans and cost ~48 µs each to record and encode; an event
        is a timestamp and an attribute on the span already being recorded. A final state is
        written out even past the task's soft time limit (soft_time_limit_deferred).
        """
        if state in states.READY_STATES:
            with soft_time_limit_deferred(task_id, state):
                stored = super().store_result(task_id, result, state, *args, **kwargs)
        else:
            stored = super().store_result(task_id, result, state, *args, **kwargs)
        trace.get_current_span().add_event(RESULT_STORED_EVENT, {"celery.state": state})
        return stored

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Skip the result subscription; results are read by key when a client asks."""


class TrustcardSentinelBackend(TrustcardRedisBackend, SentinelBackend):  # type: ignore[misc]
    """The same, on the master Redis Sentinel names (REDIS_SENTINEL_HOSTS set).

    Celery's SentinelBackend resolves the master through the Sentinels for each new connection;
    `master_name` and `sentinel_kwargs` come from result_backend_transport_options.
    """

    # NOREPLICAS is retried like a lost connection (see redis_clients.write_refusal).
    connection_class_ssl = SentinelMasterSSLConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connparams.setdefault("connection_class", SentinelMasterConnection)


@contextmanager
def soft_time_limit_deferred(task_id: str, state: str) -> Iterator[None]:
    """In a pool child, a soft time limit reached while the final state is written is logged,
    not raised; the hard limit still bounds the write.

    The soft limit is there to let a task clean up. billiard raises it from the SIGUSR1
    handler it installs in every child, wherever the child is: while Redis is away, in the
    backend's retry sleep, and a task whose body succeeded is reported failed ("Exception
    raised outside body: SoftTimeLimitExceeded", celery/app/trace.py:690-696). Seen after
    outages longer than what was left of a running task's soft limit
    (docs/upstream-redis-outages.md, section 4).
    """
    soft_signal = billiard_pool.SIG_SOFT_TIMEOUT
    if soft_signal is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(soft_signal)
    if previous is not billiard_pool.soft_timeout_sighandler:
        # Not a pool child with soft limits (the API, the worker's main process, eager runs).
        yield
        return

    def note(signum: int, frame: Any) -> None:
        log.warning(
            "task %s reached its soft time limit while storing its %s state; the write goes on",
            task_id,
            state,
        )

    signal.signal(soft_signal, note)
    try:
        yield
    finally:
        signal.signal(soft_signal, previous)
