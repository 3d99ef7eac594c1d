"""The staged simulation behind test.long_task, without Celery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trustcard.task_model.progress import SIMULATED_STAGES, Progress, run_simulated_stages


def test_reports_each_stage_in_order_with_percent() -> None:
    reports: list[Progress] = []
    slept: list[float] = []
    summary = run_simulated_stages(reports.append, 2.0, sleep=slept.append)
    assert [report.stage for report in reports] == list(SIMULATED_STAGES)
    assert [report.stage_index for report in reports] == [1, 2, 3, 4, 5]
    assert [report.percent for report in reports] == [0, 20, 40, 60, 80]
    assert {report.total_stages for report in reports} == {5}
    assert slept == [2.0] * 5
    assert summary["percent"] == 100
    assert [stage["stage"] for stage in summary["stages"]] == list(SIMULATED_STAGES)


def test_progress_meta_is_json_friendly() -> None:
    meta = Progress("a", 1, 2, 0, "2026-12-04T07:00:00+00:00").as_meta()
    assert meta == {
        "stage": "a",
        "stage_index": 1,
        "total_stages": 2,
        "percent": 0,
        "started_at": "2026-12-04T07:00:00+00:00",
    }


def test_started_at_is_iso_8601_utc_and_shared_by_every_stage() -> None:
    reports: list[Progress] = []
    run_simulated_stages(reports.append, 0.0, sleep=lambda _: None)
    started = {report.started_at for report in reports}
    assert len(started) == 1
    parsed = datetime.fromisoformat(started.pop())
    assert parsed.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - parsed) < timedelta(seconds=60)
