"""Response bodies; shapes follow the seed guide and may add fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from trustcard.task_status import TaskStatus

# OpenAPI `responses=` mapping of extra status codes per route.
Responses = dict[int | str, dict[str, Any]]


class TaskSubmitted(BaseModel):
    task_id: str
    status: str = Field("submitted", examples=["submitted"])
    message: str
    task_name: str
    status_url: str
    trace_id: str | None = Field(
        None, description="OpenTelemetry trace of this submission (null when tracing is off)"
    )


class TaskProgress(BaseModel):
    stage: str
    stage_index: int
    total_stages: int
    percent: int
    started_at: float | None = None


class TaskState(BaseModel):
    task_id: str
    status: TaskStatus
    result: Any = None
    error: str | None = None
    task_name: str
    progress: dict[str, Any] | None = Field(
        None, description="While processing: stage, stage_index, total_stages, percent"
    )
    submitted_at: str | None = None
    finished_at: str | None = None
    cancelled_at: str | None = None
    trace_id: str | None = Field(
        None, description="Trace of the submission, publish and run (null when tracing is off)"
    )


class ActiveTasks(BaseModel):
    active_tasks: dict[str, list[dict[str, Any]]]
    count: int


class TaskCancelled(BaseModel):
    task_id: str
    cancelled: bool
    message: str


class DependencyHealth(BaseModel):
    ok: bool
    url: str
    latency_ms: float | None = None
    error: str | None = None


class Health(BaseModel):
    status: str = Field(examples=["ok", "degraded"])
    version: str
    dependencies: dict[str, DependencyHealth]


class ErrorBody(BaseModel):
    detail: Any
