"""Outcome classification and queue-wait arithmetic of the worker metrics, without Celery."""

from __future__ import annotations

import pytest
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import Terminated, TimeLimitExceeded, WorkerLostError
from celery.exceptions import Ignore, Reject, Retry

from tests.metrics_text import Samples
from trustcard.observability.worker_metrics import (
    PUBLISHED_AT_HEADER,
    Outcome,
    WorkerMetrics,
    classify,
    queue_wait_seconds,
)


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (ValueError("x"), Outcome.FAILED),
        (TimeLimitExceeded(300), Outcome.FAILED),
        (Retry("again"), Outcome.RETRIED),
        (Terminated(15), Outcome.REVOKED),
        (WorkerLostError("gone"), Outcome.LOST),
        (SystemExit(1), Outcome.LOST),
        (Ignore(), Outcome.IGNORED),
        (Reject(requeue=True), Outcome.RETRIED),
        (Reject(requeue=False), Outcome.FAILED),
        (ExceptionWithTraceback(KeyError("k"), "tb"), Outcome.FAILED),
        (ExceptionWithTraceback(Retry("r"), "tb"), Outcome.RETRIED),
    ],
)
def test_classify(exc: BaseException, outcome: Outcome) -> None:
    assert classify(exc) is outcome


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({PUBLISHED_AT_HEADER: 100.0}, 2.5),
        ({PUBLISHED_AT_HEADER: 103}, 0.0),  # publisher clock ahead: clamped
        ({}, None),  # plain Celery client without our stamp
        ({PUBLISHED_AT_HEADER: "100"}, None),
        ({PUBLISHED_AT_HEADER: True}, None),
    ],
)
def test_queue_wait_seconds(headers: dict[str, object], expected: float | None) -> None:
    assert queue_wait_seconds(headers, 102.5) == expected


def samples(metrics: WorkerMetrics) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }


def test_finished_counts_once_and_clears_in_progress() -> None:
    metrics = WorkerMetrics()
    metrics.describe_worker(["a"], 2, 1, 50)
    metrics.on_received("a")
    metrics.on_started("t1", "a", {PUBLISHED_AT_HEADER: 10.0}, 11.0)
    assert samples(metrics)[("trustcard_tasks_in_progress", frozenset({("task_name", "a")}))] == 1
    metrics.on_finished("t1", "a", Outcome.FAILED, 0.5, ExceptionWithTraceback(KeyError(), ""))
    got = samples(metrics)
    assert got[("trustcard_tasks_in_progress", frozenset({("task_name", "a")}))] == 0
    failed = (
        "trustcard_task_failed_total",
        frozenset({("task_name", "a"), ("exception", "KeyError")}),
    )
    assert got[failed] == 1
    assert got[("trustcard_task_runtime_seconds_sum", frozenset({("task_name", "a")}))] == 0.5
    assert got[("trustcard_task_queue_wait_seconds_sum", frozenset({("task_name", "a")}))] == 1.0


def test_revoked_outcome_is_left_to_the_signal() -> None:
    metrics = WorkerMetrics()
    metrics.on_started("t1", "a", {}, 0.0)
    metrics.on_finished("t1", "a", Outcome.REVOKED)
    got = samples(metrics)
    assert got.get(("trustcard_task_revoked_total", frozenset({("task_name", "a")})), 0) == 0
    assert (
        got.get(("trustcard_task_runtime_seconds_count", frozenset({("task_name", "a")})), 0) == 0
    )
    metrics.on_revoked("a")
    assert samples(metrics)[("trustcard_task_revoked_total", frozenset({("task_name", "a")}))] == 1
