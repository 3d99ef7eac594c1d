"""Celery states map onto the public status vocabulary."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from billiard.exceptions import TimeLimitExceeded

from trustcard.task_model.registry import TaskRecord
from trustcard.task_model.status import TaskStatus, build_view, readable_error

RECORD = TaskRecord(task_id="t-1", name="test.add", submitted_at="2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("PENDING", "pending"),
        ("STARTED", "processing"),
        ("PROGRESS", "processing"),
        ("SUCCESS", "completed"),
        ("FAILURE", "failed"),
        ("RETRY", "retrying"),
        ("REVOKED", "cancelled"),
        ("SOMETHING_NEW", "pending"),
    ],
)
def test_state_mapping(state: str, status: str) -> None:
    assert build_view(RECORD, {"status": state, "result": None}).status.value == status


def test_queued_task_has_no_meta_yet() -> None:
    view = build_view(RECORD, None)
    assert view.status is TaskStatus.PENDING
    assert view.result is None
    assert view.error is None
    assert view.finished_at is None


def test_success_carries_result_and_finish_time() -> None:
    view = build_view(
        RECORD, {"status": "SUCCESS", "result": 8, "date_done": "2026-01-01T00:00:01"}
    )
    assert (view.result, view.error, view.finished_at) == (8, None, "2026-01-01T00:00:01")


def test_progress_only_while_processing() -> None:
    progress: dict[str, Any] = {
        "stage": "fact_check",
        "stage_index": 4,
        "total_stages": 5,
        "percent": 60,
    }
    view = build_view(RECORD, {"status": "PROGRESS", "result": progress})
    assert view.status is TaskStatus.PROCESSING
    assert view.progress == progress
    assert view.result is None


def test_failure_is_one_readable_line() -> None:
    view = build_view(RECORD, {"status": "FAILURE", "result": ValueError("bad input")})
    assert view.error == "ValueError: bad input"
    assert view.result is None


def test_time_limit_is_explained() -> None:
    assert "hard time limit (300 s)" in readable_error(TimeLimitExceeded(300))


def test_cancelled_record_overrides_unfinished_states_only() -> None:
    cancelled = RECORD.cancelled()
    assert build_view(cancelled, None).status is TaskStatus.CANCELLED
    assert build_view(cancelled, {"status": "STARTED"}).status is TaskStatus.CANCELLED
    # A task that finished before the cancel arrived keeps its real outcome.
    assert build_view(cancelled, {"status": "SUCCESS", "result": 1}).status is TaskStatus.COMPLETED


def test_record_round_trips_through_json() -> None:
    assert TaskRecord.from_json(RECORD.cancelled().to_json()).cancelled_at is not None
    assert TaskRecord.from_json(RECORD.to_json()) == RECORD


def test_cancel_time_is_the_finish_time_of_a_cancelled_task() -> None:
    cancelled = RECORD.cancelled()
    revoked_later = {"status": "REVOKED", "result": None, "date_done": "2099-01-01T00:00:00"}
    assert build_view(cancelled, revoked_later).finished_at == cancelled.cancelled_at
    assert build_view(cancelled, None).finished_at == cancelled.cancelled_at


def test_record_json_carries_every_field() -> None:
    full = TaskRecord("t-2", "test.add", "2026-01-01T00:00:00+00:00", "c", "0" * 32, "1" * 16)
    assert set(json.loads(full.to_json())) == {f.name for f in dataclasses.fields(TaskRecord)}
    assert TaskRecord.from_json(full.to_json()) == full
