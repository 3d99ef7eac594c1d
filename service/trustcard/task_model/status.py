"""Map Celery's task states onto the public status vocabulary of the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from trustcard.task_model.registry import TaskRecord

PROGRESS_STATE = "PROGRESS"


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


CELERY_STATE_TO_STATUS = {
    "PENDING": TaskStatus.PENDING,
    "RECEIVED": TaskStatus.PENDING,
    "STARTED": TaskStatus.PROCESSING,
    PROGRESS_STATE: TaskStatus.PROCESSING,
    "SUCCESS": TaskStatus.COMPLETED,
    "FAILURE": TaskStatus.FAILED,
    "RETRY": TaskStatus.RETRYING,
    "REVOKED": TaskStatus.CANCELLED,
}


@dataclass(frozen=True)
class TaskView:
    """A task as the API shows it."""

    task_id: str
    name: str
    status: TaskStatus
    result: Any = None
    error: str | None = None
    progress: dict[str, Any] | None = None
    submitted_at: str | None = None
    finished_at: str | None = None
    cancelled_at: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    owner: str | None = None


def readable_error(exc: Any) -> str:
    """One line a client can read; never a traceback."""
    if not isinstance(exc, BaseException):
        return str(exc)
    kind = type(exc).__name__
    if kind == "TimeLimitExceeded":
        return f"TimeLimitExceeded: the task ran past its hard time limit ({exc.args[0]} s)"
    if kind == "TaskRevokedError":
        return "the task was cancelled"
    text = str(exc).strip()
    return f"{kind}: {text}" if text else kind


def build_view(record: TaskRecord, meta: dict[str, Any] | None) -> TaskView:
    """Combine our submission record with Celery's result meta (None while queued)."""
    state = (meta or {}).get("status", "PENDING")
    status = CELERY_STATE_TO_STATUS.get(state, TaskStatus.PENDING)
    if record.cancelled_at and not status.finished:
        status = TaskStatus.CANCELLED
    payload = (meta or {}).get("result")
    done = (meta or {}).get("date_done")
    return TaskView(
        task_id=record.task_id,
        name=record.name,
        status=status,
        result=payload if status is TaskStatus.COMPLETED else None,
        error=readable_error(payload)
        if status in {TaskStatus.FAILED, TaskStatus.RETRYING}
        else None,
        progress=payload if state == PROGRESS_STATE and isinstance(payload, dict) else None,
        submitted_at=record.submitted_at,
        # A cancel is final when the client asked for it; the worker's later REVOKED store
        # would otherwise move the finish time.
        finished_at=(record.cancelled_at or _iso(done))
        if status is TaskStatus.CANCELLED
        else (_iso(done) if status.finished else None),
        cancelled_at=record.cancelled_at,
        trace_id=record.trace_id,
        span_id=record.span_id,
        owner=record.owner,
    )


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
