"""Submission of the seed's test.* tasks: /tasks/test/... (switched by ENABLE_TEST_ENDPOINTS)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from trustcard.api import task_queue
from trustcard.api.deps import ResourcesDep
from trustcard.api.schemas import ErrorBody, Responses, TaskSubmitted
from trustcard.api.security import current_caller
from trustcard.tasks.limits import (
    DEFAULT_STAGE_SECONDS,
    MAX_ADD_OPERAND,
    MAX_SLEEP_SECONDS,
    MAX_STAGE_SECONDS,
)

router = APIRouter(prefix="/tasks/test", tags=["test tasks"])

Operand = Annotated[int, Query(ge=-MAX_ADD_OPERAND, le=MAX_ADD_OPERAND)]
SUBMIT_RESPONSES: Responses = {
    503: {"model": ErrorBody, "description": "Redis (broker or backend) is down"}
}


async def _submit(res: ResourcesDep, request: Request, name: str, **kwargs: Any) -> TaskSubmitted:
    owner = (await current_caller(request)).owner
    record = await task_queue.submit(res, name, kwargs=kwargs, owner=owner)
    return TaskSubmitted(
        task_id=record.task_id,
        message=f"Task {name} submitted to queue analysis",
        task_name=name,
        # The route's path, formatted (url_for walks the route table on every submission).
        status_url=f"{request.scope.get('root_path', '')}/tasks/{record.task_id}",
        trace_id=record.trace_id,
    )


@router.post("/add", status_code=202, response_model=TaskSubmitted, responses=SUBMIT_RESPONSES)
async def submit_add(x: Operand, y: Operand, res: ResourcesDep, request: Request) -> TaskSubmitted:
    """Queue test.add(x, y)."""
    return await _submit(res, request, "test.add", x=x, y=y)


@router.post("/sleep", status_code=202, response_model=TaskSubmitted, responses=SUBMIT_RESPONSES)
async def submit_sleep(
    seconds: Annotated[float, Query(ge=0, le=MAX_SLEEP_SECONDS, allow_inf_nan=False)],
    res: ResourcesDep,
    request: Request,
) -> TaskSubmitted:
    """Queue test.sleep(seconds), 0..60 s."""
    return await _submit(res, request, "test.sleep", seconds=seconds)


@router.post("/long", status_code=202, response_model=TaskSubmitted, responses=SUBMIT_RESPONSES)
async def submit_long(
    res: ResourcesDep,
    request: Request,
    stage_seconds: Annotated[
        float, Query(ge=0, le=MAX_STAGE_SECONDS, allow_inf_nan=False)
    ] = DEFAULT_STAGE_SECONDS,
) -> TaskSubmitted:
    """Queue test.long_task: five named stages, ~10 s with the default 2 s per stage."""
    return await _submit(res, request, "test.long_task", stage_seconds=stage_seconds)


@router.post("/fail", status_code=202, response_model=TaskSubmitted, responses=SUBMIT_RESPONSES)
async def submit_fail(
    res: ResourcesDep,
    request: Request,
    message: Annotated[str, Query(max_length=200)] = "deliberate failure",
) -> TaskSubmitted:
    """Queue test.fail: a task that raises, to see the `failed` status and its error."""
    return await _submit(res, request, "test.fail", message=message)
