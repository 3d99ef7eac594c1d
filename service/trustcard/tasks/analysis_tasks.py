"""analysis.process_post: load the analysis row, run trustcard.analysis' pipeline, store the result.

Thin on purpose: the pipeline knows nothing of Celery or the database, the repository nothing of
either. Redelivery-safe: a redelivered task finds the row completed (and returns it), or runs
again and stores over the same rows (one row per stage, one result).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.signals import task_revoked

from trustcard.analysis.claims import Claim
from trustcard.analysis.content import InvalidPostUrl
from trustcard.analysis.pipeline import (
    ExtractionError,
    PipelineConfig,
    StageProgress,
    run_pipeline,
)
from trustcard.analysis.supplied import SuppliedContent
from trustcard.celery_app import celery_app
from trustcard.config import get_settings
from trustcard.db import repository
from trustcard.db.engine import session_factory
from trustcard.db.models import Analysis
from trustcard.db.models import Claim as StoredClaim
from trustcard.db.retry import DatabaseStepFailed, with_retry
from trustcard.observability.analysis_metrics import observe_failure, observe_result
from trustcard.task_model.progress import Progress, utc_now_iso
from trustcard.task_model.status import PROGRESS_STATE, readable_error

log = logging.getLogger(__name__)

# Stage progress is retried this long at most (the result itself gets DATABASE_RETRY_SECONDS).
STAGE_RETRY_SECONDS = 5.0


class AnalysisNotFound(LookupError):
    """The task names an analysis the database does not hold; retrying cannot help."""


class AnalysisFailed(RuntimeError):
    """The post could not be analysed; the message is the reason stored with the analysis."""


@celery_app.task(name="analysis.process_post", bind=True)
def process_post(self: Task, analysis_id: str) -> dict[str, Any]:
    """Analyse the post of analysis `analysis_id`, reporting each stage as progress."""
    settings = get_settings()
    sessions = session_factory(settings.DATABASE_URL)
    retry_seconds = settings.DATABASE_RETRY_SECONDS

    def start() -> tuple[Analysis | None, list[StoredClaim]]:
        with sessions() as session:
            found = repository.start_processing(session, str(analysis_id), self.request.id or "")
            return found, repository.list_claims(session) if found is not None else []

    # Every database step is retried within DATABASE_RETRY_SECONDS; past it the analysis ends
    # `failed` with the reason (if the database takes even that), never `pending` for ever.
    try:
        analysis, stored_claims = with_retry(
            start, what="starting the analysis", seconds=retry_seconds
        )
    except DatabaseStepFailed as exc:
        _fail_quietly(analysis_id, str(exc))
        raise
    if analysis is None:
        raise AnalysisNotFound(f"analysis {analysis_id} does not exist in the database")
    if analysis.status == "completed":
        log.info("analysis %s was already stored (redelivered task); nothing to redo", analysis_id)
        return task_summary(analysis)
    if analysis.status == "failed":
        raise AnalysisFailed(analysis.error or "the analysis had already failed")
    url, request = analysis.url, analysis.request
    claims = matchable_claims(stored_claims)

    started_at = utc_now_iso()
    progress_lost: list[str] = []

    def on_stage(progress: StageProgress) -> None:
        # Like test.long_task: PROGRESS meta for GET /tasks/{id}, plus the row for the API.
        self.update_state(
            state=PROGRESS_STATE,
            meta=Progress(
                stage=progress.stage,
                stage_index=progress.stage_index + 1,
                total_stages=progress.total_stages,
                percent=progress.percent,
                started_at=started_at,
            ).as_meta(),
        )

        def record_stage() -> None:
            with sessions() as stage_session:
                repository.mark_stage(stage_session, analysis_id, progress.stage, progress.percent)

        # Progress is a courtesy: a database that is away now must not fail the analysis, nor
        # stretch it (after one stage gave up, later stages try once).
        try:
            with_retry(
                record_stage,
                what=f"recording stage {progress.stage}",
                seconds=0 if progress_lost else min(STAGE_RETRY_SECONDS, retry_seconds),
            )
        except DatabaseStepFailed as exc:
            progress_lost.append(progress.stage)
            log.warning("analysis %s: %s; going on", analysis_id, exc)

    supplied = None
    pipeline_started = time.monotonic()
    try:
        supplied = (
            SuppliedContent.model_validate(request["content"]) if request.get("content") else None
        )
        result = run_pipeline(
            url,
            supplied,
            claims=claims,
            config=PipelineConfig.from_settings(settings),
            on_stage=on_stage,
        )
    except (ExtractionError, InvalidPostUrl) as exc:
        # Both end in extract (the URL is checked first): the pipeline's time is that stage's.
        cause = exc.cause if isinstance(exc, ExtractionError) else "invalid_url"
        observe_failure(_source(supplied), cause, time.monotonic() - pipeline_started)
        log.warning("analysis %s failed at extract (%s): %s", analysis_id, cause, exc)
        _fail_quietly(analysis_id, str(exc))
        raise AnalysisFailed(str(exc)) from None
    except Exception as exc:
        # Unexpected (a bug, the soft time limit): the row must not stay "processing" forever.
        _fail_quietly(analysis_id, readable_error(exc))
        raise

    on_stage(result.store_progress())
    stages = [
        repository.StageRecord(
            name=outcome.name,
            status=outcome.status,
            signal=outcome.signal,
            detail=outcome.detail,
            seconds=outcome.seconds,
        )
        for outcome in result.stages
    ]

    def store() -> dict[str, Any]:
        with sessions() as session:
            stored = repository.store_result(
                session,
                analysis_id,
                result=result.as_dict(),
                stages=stages,
                trust_score=result.trust.score,
                trust_label=result.trust.label,
            )
            return task_summary(stored)

    store_started = time.monotonic()
    try:
        summary = with_retry(store, what="storing the result", seconds=retry_seconds)
    except DatabaseStepFailed as exc:
        _fail_quietly(analysis_id, str(exc))
        raise
    observe_result(_source(supplied), result, time.monotonic() - store_started)
    log.info(
        "analysis %s: %s (score %s) in %.2f s",
        analysis_id,
        result.trust.label,
        result.trust.score,
        time.monotonic() - pipeline_started,
    )
    return summary


def _source(supplied: SuppliedContent | None) -> str:
    return "fetched" if supplied is None else "supplied"


@task_revoked.connect
def mark_cancelled(sender: Any = None, request: Any = None, **_: Any) -> None:
    """DELETE /tasks/{task_id} of an analysis: the killed task cannot update its row, we do.

    Runs in the worker's main process for a queued or a running (terminated) task alike.
    """
    if getattr(sender, "name", None) != process_post.name or request is None:
        return
    args = list(getattr(request, "args", None) or [])
    if len(args) != 1 or not isinstance(args[0], str):
        return
    try:
        # The worker's main process runs this: a short bound, it must not stall consuming.
        _fail(args[0], f"cancelled (task {request.id} revoked)", retry_seconds=2.0)
    except Exception:
        log.exception("could not mark cancelled analysis %s failed", args[0])


def _fail(analysis_id: str, reason: str, retry_seconds: float | None = None) -> None:
    settings = get_settings()

    def mark() -> None:
        with session_factory(settings.DATABASE_URL)() as session:
            repository.mark_failed(session, analysis_id, reason)

    seconds = settings.DATABASE_RETRY_SECONDS if retry_seconds is None else retry_seconds
    with_retry(mark, what="marking the analysis failed", seconds=seconds)


def _fail_quietly(analysis_id: str, reason: str) -> None:
    """Mark the analysis failed; if even that cannot reach the database, the API settles the
    row later from the task's failed state (trustcard.api.analysis_liveness)."""
    try:
        _fail(analysis_id, reason)
    except Exception:
        log.exception("could not mark analysis %s failed (%s)", analysis_id, reason)


def matchable_claims(rows: list[StoredClaim]) -> list[Claim]:
    """The stored claims as the matcher takes them; a claim it cannot use is logged and left out."""
    claims = []
    for row in rows:
        try:
            claims.append(Claim(id=row.id, text=row.text, verdict=row.verdict, sources=row.sources))
        except ValueError as exc:
            log.warning("claim %s left out of fact-checking: %s", row.id, exc)
    return claims


def task_summary(analysis: Analysis) -> dict[str, Any]:
    """The task's own result; the full analysis lives in the database (GET /analysis/posts/{id})."""
    trust = (analysis.result or {}).get("trust") or {}
    return {
        "analysis_id": analysis.id,
        "status": analysis.status,
        "trust_score": analysis.trust_score,
        "trust_label": analysis.trust_label,
        "confidence": trust.get("confidence"),
        "analysis_url": f"/analysis/posts/{analysis.id}",
    }
