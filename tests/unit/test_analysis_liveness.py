"""When a running analysis can no longer finish (plain function, no Redis or database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trustcard.api.analysis_liveness import RECORD_GRACE, dead_reason
from trustcard.api.schemas import AnalysisRequest
from trustcard.task_model.status import TaskStatus, TaskView

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
OLD = NOW - RECORD_GRACE - timedelta(seconds=1)


def view(status: TaskStatus, error: str | None = None) -> TaskView:
    return TaskView(
        task_id="t",
        name="analysis.process_post",
        status=status,
        result=None,
        error=error,
        progress=None,
        submitted_at=None,
        finished_at=None,
        cancelled_at=None,
        trace_id=None,
        span_id=None,
    )


@pytest.mark.parametrize("status", ["pending", "processing"])
def test_a_failed_or_cancelled_task_means_dead(status: str) -> None:
    reason = dead_reason(status, NOW, view(TaskStatus.FAILED, "OperationalError: gone"), NOW)
    assert reason == "its task ended failed: OperationalError: gone"
    assert dead_reason(status, NOW, view(TaskStatus.CANCELLED), NOW) == "cancelled (task t revoked)"


def test_a_completed_task_with_a_running_row_means_the_result_was_lost() -> None:
    assert "never reached the database" in str(
        dead_reason("processing", NOW, view(TaskStatus.COMPLETED), NOW)
    )


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.RETRYING])
def test_a_task_that_may_still_run_keeps_the_row_alive(status: TaskStatus) -> None:
    assert dead_reason("pending", OLD, view(status), NOW) is None


def test_a_missing_record_is_dead_only_after_the_grace() -> None:
    assert dead_reason("pending", NOW - timedelta(seconds=5), None, NOW) is None
    assert "task is gone" in str(dead_reason("pending", OLD, None, NOW))


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_finished_rows_are_left_alone(status: str) -> None:
    assert dead_reason(status, OLD, view(TaskStatus.FAILED), NOW) is None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"url": "https://www.instagram.com/p/C0dE1234567/\x00"}, "url"),
        (
            {"url": "https://www.instagram.com/p/C0dE1234567/", "content": {"caption": "a\x00"}},
            "content.caption",
        ),
    ],
)
def test_nul_characters_are_refused_naming_the_field(body: dict[str, object], where: str) -> None:
    with pytest.raises(ValueError, match=rf"{where} contains a NUL character"):
        AnalysisRequest.model_validate(body)
