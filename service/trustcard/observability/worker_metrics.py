"""Prometheus metrics of a Celery worker, kept in the worker's main process.

Every task outcome passes through the main process: the prefork pool hands each job's
accept/result/error callback to it (see trustcard.worker.worker_pool). Counting there instead of in
the pool children means no prometheus multiprocess mode: no per-child files, no series left
behind when max-tasks-per-child recycles a child, and nothing to clean up.

Names follow celery-exporter's meaning (celery_task_succeeded_total, celery_task_runtime, ...)
with our `trustcard_` prefix and a `task_name` label.
"""

from __future__ import annotations

import enum
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import celery
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import Terminated, WorkerLostError
from celery.exceptions import Ignore, Reject, Retry
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trustcard import __version__

# Header the publisher stamps (time.time()) so the worker can measure queue wait.
PUBLISHED_AT_HEADER = "trustcard_published_at"

# Labels of trustcard_worker_info: what a dashboard shows about each worker.
INFO_LABELS = (
    "version",
    "celery_version",
    "concurrency",
    "prefetch_multiplier",
    "max_tasks_per_child",
)
# Runtime buckets: no-op tests take milliseconds, analyses seconds to minutes (hard limit 300 s).
RUNTIME_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 240, 300, 600)
# Queue wait: milliseconds when workers keep up, minutes when the queue backs up.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    # Counted by the task_revoked signal, which Celery sends for revoked and terminated tasks.
    REVOKED = "revoked"
    # The pool process died mid-task; with task_reject_on_worker_lost the message is redelivered.
    LOST = "lost"
    # Ignore(): the task asked Celery to forget it; no outcome to count.
    IGNORED = "ignored"


def unwrap(exc: BaseException) -> BaseException:
    """The task's own exception (billiard wraps it to carry the traceback across the pipe)."""
    return exc.exc if isinstance(exc, ExceptionWithTraceback) else exc


def classify(exc: BaseException) -> Outcome:
    """Map the exception a job ended with to the outcome Celery's Request gives it."""
    exc = unwrap(exc)
    if isinstance(exc, Retry):
        return Outcome.RETRIED
    if isinstance(exc, Terminated):
        return Outcome.REVOKED
    if isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt):
        return Outcome.LOST
    if isinstance(exc, Ignore):
        return Outcome.IGNORED
    if isinstance(exc, Reject):
        return Outcome.RETRIED if exc.requeue else Outcome.FAILED
    return Outcome.FAILED


def queue_wait_seconds(headers: Mapping[str, Any], started_at: float) -> float | None:
    """Seconds from publish to start, or None when the publisher did not stamp the message.

    Publisher and worker clocks may differ (different nodes); a negative wait is clamped to 0.
    """
    published_at = headers.get(PUBLISHED_AT_HEADER)
    if not isinstance(published_at, int | float) or isinstance(published_at, bool):
        return None
    return max(0.0, started_at - float(published_at))


@dataclass(slots=True)
class _Running:
    task_name: str
    started_monotonic: float


@dataclass(frozen=True, slots=True)
class _TaskSeries:
    """One task name's series, bound once: `labels()` hashes and locks on every call."""

    received: Any
    started: Any
    succeeded: Any
    retried: Any
    revoked: Any
    lost: Any
    runtime: Any
    queue_wait: Any


@dataclass
class WorkerMetrics:
    """The worker's metric families, on their own registry (served by the worker only)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    running: dict[str, _Running] = field(default_factory=dict)
    # Each task name's bound series (its keys: every task name this worker has seen).
    series: dict[str, _TaskSeries] = field(default_factory=dict)
    pool_processes: Callable[[], int] | None = None

    def __post_init__(self) -> None:
        r = self.registry
        labels = ["task_name"]
        self.received = Counter(
            "trustcard_task_received", "Task messages received by this worker", labels, registry=r
        )
        self.started = Counter(
            "trustcard_task_started", "Tasks handed to a pool process", labels, registry=r
        )
        self.succeeded = Counter(
            "trustcard_task_succeeded", "Tasks that returned a result", labels, registry=r
        )
        self.failed = Counter(
            "trustcard_task_failed",
            "Tasks that ended in failure (exception raised, time limit, rejected)",
            ["task_name", "exception"],
            registry=r,
        )
        self.retried = Counter(
            "trustcard_task_retried", "Tasks that asked to be retried", labels, registry=r
        )
        self.revoked = Counter(
            "trustcard_task_revoked",
            "Tasks revoked (cancelled) before or while running",
            labels,
            registry=r,
        )
        self.lost = Counter(
            "trustcard_task_lost",
            "Tasks whose pool process died mid-run; the message is redelivered",
            labels,
            registry=r,
        )
        self.runtime = Histogram(
            "trustcard_task_runtime_seconds",
            "Time a task ran in its pool process",
            labels,
            buckets=RUNTIME_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "trustcard_task_queue_wait_seconds",
            "Time from publish to the start of execution",
            labels,
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.up = Gauge("trustcard_worker_up", "1 while this worker consumes tasks", registry=r)
        self.info = Gauge(
            "trustcard_worker_info",
            "Version and pool settings of this worker (value 1)",
            INFO_LABELS,
            registry=r,
        )
        r.register(_LiveStateCollector(self))

    def describe_worker(
        self,
        task_names: Iterable[str],
        concurrency: int,
        prefetch_multiplier: int,
        max_tasks_per_child: int | None,
    ) -> None:
        """Publish worker info and start every task's series at 0, so rate() sees the first task."""
        for name in task_names:
            self._start_series(name)
        self.info.labels(
            __version__,
            celery.__version__,
            str(concurrency),
            str(prefetch_multiplier),
            str(max_tasks_per_child or 0),
        ).set(1)

    def _start_series(self, task_name: str) -> _TaskSeries:
        series = _TaskSeries(
            received=self.received.labels(task_name),
            started=self.started.labels(task_name),
            succeeded=self.succeeded.labels(task_name),
            retried=self.retried.labels(task_name),
            revoked=self.revoked.labels(task_name),
            lost=self.lost.labels(task_name),
            runtime=self.runtime.labels(task_name),
            queue_wait=self.queue_wait.labels(task_name),
        )
        self.series[task_name] = series
        return series

    def _series(self, task_name: str) -> _TaskSeries:
        """The bound series; a name never received (rare) gets its series bound here."""
        series = self.series.get(task_name)
        return series if series is not None else self._start_series(task_name)

    # The hooks below run in the worker's main process, from pool and signal callbacks.
    def on_received(self, task_name: str) -> None:
        self._series(task_name).received.inc()

    def on_started(
        self, task_id: str, task_name: str, headers: Mapping[str, Any], started_at: float
    ) -> None:
        series = self._series(task_name)
        series.started.inc()
        self.running[task_id] = _Running(task_name, time.monotonic())
        wait = queue_wait_seconds(headers, started_at)
        if wait is not None:
            series.queue_wait.observe(wait)

    def on_finished(
        self,
        task_id: str,
        task_name: str,
        outcome: Outcome,
        runtime: float | None = None,
        exception: BaseException | None = None,
    ) -> None:
        running = self.running.pop(task_id, None)
        if runtime is None and running is not None:
            runtime = time.monotonic() - running.started_monotonic
        series = self._series(task_name)
        if outcome is Outcome.SUCCEEDED:
            if runtime is not None:
                series.runtime.observe(runtime)
            series.succeeded.inc()
        elif outcome is Outcome.FAILED:
            if runtime is not None:
                series.runtime.observe(runtime)
            name = type(unwrap(exception)).__name__ if exception is not None else "unknown"
            self.failed.labels(task_name, name).inc()
        elif outcome is Outcome.RETRIED:
            series.retried.inc()
        elif outcome is Outcome.LOST:
            series.lost.inc()
        # REVOKED is counted by on_revoked (the signal covers tasks that never started too).

    def on_revoked(self, task_name: str) -> None:
        # A revoke can name a task this worker never received: count it without starting
        # that name's other series.
        series = self.series.get(task_name)
        (series.revoked if series is not None else self.revoked.labels(task_name)).inc()


class _LiveStateCollector(Collector):
    """Gauges read at scrape time from live state, so they cannot drift."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        in_progress = GaugeMetricFamily(
            "trustcard_tasks_in_progress",
            "Tasks running in this worker's pool now",
            labels=["task_name"],
        )
        counts = Tally(r.task_name for r in list(self.metrics.running.values()))
        for task_name in sorted(self.metrics.series.keys() | counts.keys()):
            in_progress.add_metric([task_name], counts.get(task_name, 0))
        yield in_progress
        if self.metrics.pool_processes is not None:
            yield GaugeMetricFamily(
                "trustcard_worker_processes",
                "Pool processes of this worker now",
                value=self.metrics.pool_processes(),
            )


# One per worker process; the API never serves it.
WORKER_METRICS = WorkerMetrics()
