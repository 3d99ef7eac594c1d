"""Task status, listing and cancellation: /tasks/..."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from trustcard.api import task_queue
from trustcard.api.deps import ResourcesDep
from trustcard.api.schemas import ActiveTasks, ErrorBody, Responses, TaskCancelled, TaskState
from trustcard.api.security import Caller, CallerDep
from trustcard.observability.tracing import link_current_span
from trustcard.task_model.status import TaskView

router = APIRouter(prefix="/tasks", tags=["tasks"])

# Bounded so a long-poll never outlives proxies' idle timeouts (nginx: 60 s).
MAX_WAIT_SECONDS = 30
TaskIdPath = Annotated[uuid.UUID, Path(description="The id returned at submission")]
NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No task with this id was issued"}}
UNAVAILABLE: Responses = {
    503: {"model": ErrorBody, "description": "Redis (broker or backend) is down"}
}


def _not_found(task_id: str) -> HTTPException:
    return HTTPException(
        status_code=404,
        detail=f"task {task_id} was not issued by this service, or its record has expired",
    )


async def _view_or_404(res: ResourcesDep, task_id: uuid.UUID, caller: Caller) -> TaskView:
    """The task, or 404 when it does not exist or belongs to another key (no oracle)."""
    view = await task_queue.lookup(res, str(task_id))
    if view is None or not caller.may_see(view.owner):
        raise _not_found(str(task_id))
    return view


@router.get("/", response_model=ActiveTasks, responses=UNAVAILABLE)
@router.get("", response_model=ActiveTasks, include_in_schema=False)
async def list_active_tasks(res: ResourcesDep, caller: CallerDep) -> ActiveTasks:
    """Tasks the live workers are running now, per worker: this key's (all for admin keys)."""
    active = await task_queue.active_tasks(res)
    if caller.owner is not None and not caller.admin:
        active = await task_queue.owned_by(res, active, caller.owner)
    return ActiveTasks(active_tasks=active, count=sum(len(tasks) for tasks in active.values()))


@router.get("/{task_id}", response_model=TaskState, responses={**NOT_FOUND, **UNAVAILABLE})
async def get_task(
    task_id: TaskIdPath,
    res: ResourcesDep,
    request: Request,
    caller: CallerDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Long-poll: wait up to this many seconds for the task to finish "
            "(completed, failed or cancelled); answers as soon as it does. 0 answers at once. "
            "Bounded per client (429 above LONG_POLL_PER_CLIENT concurrent waits) and per "
            "API process (above LONG_POLL_MAX it answers at once with the current state).",
        ),
    ] = 0,
) -> TaskState:
    """Status, result or error, and progress of a submitted task."""
    # Set by `authorize` (the router's dependency): the API key's id, or the address.
    client: str = getattr(request.state, "client_id", "unknown")
    # The slot first: a client over its share gets 429 before it uses any Redis connection.
    with res.long_poll_slots.hold(client) if wait > 0 else nullcontext(False) as waiting:
        # Another key's task answers 404 like one never issued (ownership, before any wait).
        view = await _view_or_404(res, task_id, caller)
        if waiting:
            waited = await task_queue.wait_until_finished(res, str(task_id), wait)
            if waited is None:
                raise _not_found(str(task_id))
            view = waited
    if view.trace_id and view.span_id:
        # A poll is its own trace; the link leads from it to the task's.
        link_current_span(view.trace_id, view.span_id)
    return TaskState(
        task_id=view.task_id,
        status=view.status,
        result=view.result,
        error=view.error,
        task_name=view.name,
        progress=view.progress,
        submitted_at=view.submitted_at,
        finished_at=view.finished_at,
        cancelled_at=view.cancelled_at,
        trace_id=view.trace_id,
    )


@router.delete(
    "/{task_id}",
    response_model=TaskCancelled,
    responses={
        **NOT_FOUND,
        **UNAVAILABLE,
        409: {"model": ErrorBody, "description": "Already finished"},
    },
)
async def cancel_task(task_id: TaskIdPath, res: ResourcesDep, caller: CallerDep) -> TaskCancelled:
    """Cancel a queued task (it never runs) or stop a running one."""
    view = await _view_or_404(res, task_id, caller)
    if view.status.finished:
        raise HTTPException(
            status_code=409,
            detail=f"task {view.task_id} is already {view.status.value}; nothing to cancel",
        )
    await task_queue.cancel(res, view)
    was = "running" if view.status.value == "processing" else "queued"
    return TaskCancelled(
        task_id=view.task_id,
        cancelled=True,
        message=f"Task cancellation requested (task was {was})",
    )
