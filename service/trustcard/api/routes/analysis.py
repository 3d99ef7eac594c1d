"""Post analyses: submit one (POST /analysis/posts), read it, list them newest first."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from sqlalchemy.orm import Session

from trustcard.api import task_queue
from trustcard.api.analysis_liveness import settle_if_dead
from trustcard.api.database import run_db
from trustcard.api.deps import ResourcesDep
from trustcard.api.errors import DependencyUnavailable
from trustcard.api.schemas import (
    AnalysisOut,
    AnalysisPage,
    AnalysisRequest,
    AnalysisSubmitted,
    AnalysisSummary,
    ErrorBody,
    Responses,
    StageResultOut,
    TrustOut,
)
from trustcard.api.security import CallerDep
from trustcard.config import Settings
from trustcard.db import repository
from trustcard.db.models import Analysis
from trustcard.observability.tracing import current_trace_ids

log = logging.getLogger(__name__)

router = APIRouter(prefix="/analysis/posts", tags=["analysis"])

TASK_NAME = "analysis.process_post"
UNAVAILABLE: Responses = {
    503: {"model": ErrorBody, "description": "Redis or the database is down (named in the body)"}
}
NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No analysis with this id"}}


@router.post(
    "",
    status_code=202,
    response_model=AnalysisSubmitted,
    responses={
        200: {"model": AnalysisSubmitted, "description": "The same post is already being analysed"},
        **UNAVAILABLE,
    },
)
async def submit_analysis(
    body: AnalysisRequest,
    res: ResourcesDep,
    caller: CallerDep,
    request: Request,
    response: Response,
) -> AnalysisSubmitted:
    """Queue analysis.process_post for a post; an analysis of it already running is returned."""
    shortcode = body.shortcode
    analysis_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    trace = current_trace_ids()
    stored_request = body.model_dump(mode="json", exclude={"force"}, exclude_none=True)

    def create(session: Session) -> repository.Submission:
        return repository.submit_analysis(
            session,
            analysis_id=analysis_id,
            url=body.url,
            shortcode=shortcode,
            request=stored_request,
            task_id=task_id,
            trace_id=trace[0] if trace else None,
            force=body.force,
            stale_after=stale_after(res.settings),
            owner=caller.owner,
        )

    submission = await run_db(res, create)
    if not submission.created and await settle_if_dead(res, submission.analysis):
        # The running one was dead (its task over, the row never told): start a new one.
        submission = await run_db(res, create)
    analysis = submission.analysis
    root = request.scope.get("root_path", "")
    if not submission.created:
        response.status_code = 200
        return _submitted(
            root,
            analysis,
            deduplicated=True,
            message=f"An analysis of post {shortcode} is already {analysis.status}; "
            "returning it (force=true starts a new one)",
        )
    try:
        await task_queue.submit(
            res, TASK_NAME, args=[analysis_id], task_id=task_id, owner=caller.owner
        )
    except DependencyUnavailable as exc:
        if exc.task_id is None:  # else it may have been queued: its task may still run it
            await _fail_unqueued(res, analysis_id, exc)
        raise
    return _submitted(
        root, analysis, message=f"Analysis of post {shortcode} submitted to queue analysis"
    )


async def _fail_unqueued(res: ResourcesDep, analysis_id: str, exc: DependencyUnavailable) -> None:
    """A task that never reached the broker must not leave its analysis pending for ever."""
    try:
        await run_db(
            res, lambda session: repository.mark_failed(session, analysis_id, f"not queued: {exc}")
        )
    except DependencyUnavailable:
        log.warning("could not mark unqueued analysis %s failed", analysis_id)


def stale_after(settings: Settings) -> timedelta:
    """After this, a processing analysis has no live task: every delivery hit its hard limit."""
    return timedelta(seconds=2 * settings.TASK_TIME_LIMIT + settings.BROKER_VISIBILITY_TIMEOUT)


def _submitted(
    root: str, analysis: Analysis, message: str, deduplicated: bool = False
) -> AnalysisSubmitted:
    return AnalysisSubmitted(
        analysis_id=analysis.id,
        task_id=analysis.task_id or "",
        status=analysis.status if deduplicated else "submitted",
        message=message,
        status_url=f"{root}/analysis/posts/{analysis.id}",
        task_status_url=f"{root}/tasks/{analysis.task_id}",
        deduplicated=deduplicated,
        trace_id=analysis.trace_id,
    )


@router.get("/{analysis_id}", response_model=AnalysisOut, responses={**NOT_FOUND, **UNAVAILABLE})
async def get_analysis(analysis_id: uuid.UUID, res: ResourcesDep, caller: CallerDep) -> AnalysisOut:
    """The stored analysis: status and stage, per-stage results, trust score, timestamps."""

    def load(session: Session) -> tuple[Analysis, AnalysisOut] | None:
        analysis = repository.get_analysis(session, str(analysis_id))
        # Another key's analysis answers like one that does not exist.
        if analysis is None or not caller.may_see(analysis.owner):
            return None
        return analysis, analysis_out(analysis)

    found = await run_db(res, load)
    if found is not None and await settle_if_dead(res, found[0]):
        found = await run_db(res, load)
    if found is None:
        raise HTTPException(status_code=404, detail=f"analysis {analysis_id} not found")
    return found[1]


@router.get("/", response_model=AnalysisPage, include_in_schema=False)
@router.get(
    "",
    response_model=AnalysisPage,
    responses={422: {"model": ErrorBody, "description": "Invalid cursor"}, **UNAVAILABLE},
)
async def list_analyses(
    res: ResourcesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=repository.MAX_PAGE_SIZE)] = 20,
    cursor: Annotated[
        str | None,
        Query(
            max_length=100,
            json_schema_extra={"pattern": repository.CURSOR_PATTERN},
            description="`next_cursor` of the previous page",
        ),
    ] = None,
) -> AnalysisPage:
    """This key's analyses (all for admin keys), newest first; follow `next_cursor`."""
    owner = None if caller.admin else caller.owner

    def page(session: Session) -> AnalysisPage:
        found = repository.list_analyses(session, limit, cursor, owner=owner)
        return AnalysisPage(
            items=[AnalysisSummary(**summary_fields(a)) for a in found.items],
            next_cursor=found.next_cursor,
        )

    try:
        return await run_db(res, page)
    except repository.InvalidCursor as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


def summary_fields(analysis: Analysis) -> dict[str, Any]:
    return {
        "analysis_id": analysis.id,
        "url": analysis.url,
        "shortcode": analysis.shortcode,
        "status": analysis.status,
        "stage": analysis.stage,
        "percent": analysis.percent,
        "trust_score": analysis.trust_score,
        "trust_label": analysis.trust_label,
        "error": analysis.error,
        "task_id": analysis.task_id,
        "trace_id": analysis.trace_id,
        "created_at": analysis.created_at,
        "started_at": analysis.started_at,
        "finished_at": analysis.finished_at,
    }


def analysis_out(analysis: Analysis) -> AnalysisOut:
    result = analysis.result or {}
    trust = result.get("trust")
    return AnalysisOut(
        **summary_fields(analysis),
        trust=TrustOut(**trust) if isinstance(trust, dict) else None,
        content=result.get("content"),
        stages=[
            StageResultOut(
                name=stage.name,
                status=stage.status,
                signal=stage.signal,
                detail=stage.detail,
                seconds=stage.seconds,
            )
            for stage in analysis.stages
        ],
    )
