"""Plain functions over a Session: one call is one transaction, safe to repeat on redelivery."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trustcard.db.models import (
    CLAIM_VERDICTS,
    RUNNING_STATUSES,
    Analysis,
    Claim,
    StageResult,
    utc_now,
)

MAX_PAGE_SIZE = 100


class InvalidCursor(ValueError):
    """A pagination cursor this service did not hand out."""


@dataclass(frozen=True)
class Submission:
    analysis: Analysis
    # False: an analysis of the same post was already running and is returned instead.
    created: bool


def submit_analysis(
    session: Session,
    *,
    analysis_id: str,
    url: str,
    shortcode: str,
    request: dict[str, Any],
    task_id: str,
    trace_id: str | None = None,
    force: bool = False,
    stale_after: timedelta | None = None,
    owner: str | None = None,
) -> Submission:
    """Create a pending analysis, or return the one already running for this post.

    With `force`, a new analysis starts anyway and later submissions join the new one. A
    running analysis that started more than `stale_after` ago cannot be alive (its task is past
    every time limit and redelivery): it is marked failed and a new one starts.
    Only the same `owner`'s running analysis is joined: another key's starts a new one.
    """
    running = None if force else _running_for(session, shortcode)
    if running is not None and running.owner != owner:
        force, running = True, None
    if running is not None and _is_stale(running, stale_after):
        _abandon(session, running, stale_after)
        running = None
    if running is not None:
        return Submission(running, created=False)
    if force:
        session.execute(
            update(Analysis)
            .where(Analysis.running_shortcode == shortcode)
            .values(running_shortcode=None)
        )
    analysis = Analysis(
        id=analysis_id,
        url=url,
        shortcode=shortcode,
        running_shortcode=shortcode,
        status="pending",
        percent=0,
        task_id=task_id,
        trace_id=trace_id,
        owner=owner,
        request=request,
        created_at=utc_now(),
    )
    session.add(analysis)
    try:
        session.commit()
    except IntegrityError:
        # Another submission of the same post won the race between our check and insert.
        session.rollback()
        running = _running_for(session, shortcode)
        if running is None:
            raise
        return Submission(running, created=False)
    return Submission(analysis, created=True)


def _is_stale(analysis: Analysis, stale_after: timedelta | None) -> bool:
    started = analysis.started_at
    return stale_after is not None and started is not None and utc_now() - started > stale_after


def _abandon(session: Session, analysis: Analysis, stale_after: timedelta | None) -> None:
    seconds = stale_after.total_seconds() if stale_after else 0
    analysis.status = "failed"
    analysis.error = (
        f"abandoned: no result {seconds:g} s after it started (its worker was lost past the "
        "time limits)"
    )
    analysis.running_shortcode = None
    analysis.finished_at = utc_now()
    session.flush()


def _running_for(session: Session, shortcode: str) -> Analysis | None:
    return session.scalar(select(Analysis).where(Analysis.running_shortcode == shortcode))


def get_analysis(session: Session, analysis_id: str) -> Analysis | None:
    return session.get(Analysis, analysis_id)


@dataclass(frozen=True)
class Page:
    items: list[Analysis]
    next_cursor: str | None


def list_analyses(
    session: Session, limit: int, cursor: str | None = None, *, owner: str | None = None
) -> Page:
    """Newest first; `next_cursor` continues after the last item (keyset, stable under inserts).

    `owner`: only that key's analyses (None: everyone's).
    """
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    query = select(Analysis).order_by(Analysis.created_at.desc(), Analysis.id.desc())
    if owner is not None:
        query = query.where(Analysis.owner == owner)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Analysis.created_at < created_at,
                and_(Analysis.created_at == created_at, Analysis.id < last_id),
            )
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items, encode_cursor(items[-1]) if more and items else None)


# A cursor is "<microseconds since 1970 UTC>.<analysis id>" of the last item of a page: plain
# enough to describe by a pattern (the OpenAPI document does), exact on both databases.
CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(analysis: Analysis) -> str:
    return f"{(analysis.created_at - _EPOCH) // _MICROSECOND}.{analysis.id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidCursor(f"invalid cursor {cursor[:80]!r}: use next_cursor as given")
    micros, last_id = cursor.split(".", 1)
    return _EPOCH + int(micros) * _MICROSECOND, last_id


def start_processing(session: Session, analysis_id: str, task_id: str) -> Analysis | None:
    """Mark the analysis processing (first start only); None if it does not exist."""
    analysis = session.get(Analysis, analysis_id)
    if analysis is None:
        return None
    if analysis.status in RUNNING_STATUSES:
        analysis.status = "processing"
        analysis.task_id = task_id
        analysis.started_at = analysis.started_at or utc_now()
        session.commit()
    return analysis


def mark_stage(session: Session, analysis_id: str, stage: str, percent: int) -> None:
    """Record the stage a running analysis is in (a no-op once it has finished)."""
    session.execute(
        update(Analysis)
        .where(Analysis.id == analysis_id, Analysis.status.in_(RUNNING_STATUSES))
        .values(status="processing", stage=stage, percent=percent)
    )
    session.commit()


@dataclass(frozen=True)
class StageRecord:
    name: str
    status: str
    signal: dict[str, Any] | None = None
    detail: str | None = None
    seconds: float | None = None


def store_result(
    session: Session,
    analysis_id: str,
    *,
    result: dict[str, Any],
    stages: Sequence[StageRecord],
    trust_score: float | None,
    trust_label: str | None,
) -> Analysis:
    """Complete the analysis; storing the same result again updates rows instead of adding."""
    for attempt in range(2):
        try:
            return _store_result(session, analysis_id, result, stages, trust_score, trust_label)
        except IntegrityError:
            # A duplicate run inserted the same stage rows between our read and write: redo.
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


def _store_result(
    session: Session,
    analysis_id: str,
    result: dict[str, Any],
    stages: Sequence[StageRecord],
    trust_score: float | None,
    trust_label: str | None,
) -> Analysis:
    analysis = session.get(Analysis, analysis_id, populate_existing=True)
    if analysis is None:
        raise LookupError(f"analysis {analysis_id} does not exist")
    existing = {row.name: row for row in analysis.stages}
    for stage in stages:
        row = existing.get(stage.name)
        if row is None:
            row = StageResult(analysis_id=analysis_id, name=stage.name, status=stage.status)
            analysis.stages.append(row)
        row.status = stage.status
        row.signal = stage.signal
        row.detail = stage.detail
        row.seconds = stage.seconds
    analysis.result = result
    analysis.trust_score = trust_score
    analysis.trust_label = trust_label
    analysis.status = "completed"
    analysis.stage = "store"
    analysis.percent = 100
    analysis.error = None
    analysis.running_shortcode = None
    analysis.finished_at = analysis.finished_at or utc_now()
    session.commit()
    return analysis


def mark_failed(session: Session, analysis_id: str, error: str) -> None:
    """Finish the analysis as failed with a readable reason (a completed one stays completed)."""
    session.execute(
        update(Analysis)
        .where(Analysis.id == analysis_id, Analysis.status != "completed")
        .values(status="failed", error=error, running_shortcode=None, finished_at=utc_now())
    )
    session.commit()


@dataclass(frozen=True)
class ClaimInput:
    text: str
    verdict: str
    sources: list[str]

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("claim text is empty")
        if self.verdict not in CLAIM_VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {', '.join(CLAIM_VERDICTS)}")


def add_claim(session: Session, claim: ClaimInput) -> Claim:
    row = Claim(
        text=claim.text.strip(),
        verdict=claim.verdict,
        sources=list(claim.sources),
        created_at=utc_now(),
    )
    session.add(row)
    session.commit()
    return row


def list_claims(session: Session, limit: int | None = None, after_id: int = 0) -> list[Claim]:
    """Claims by id; `after_id` continues a previous page."""
    query = select(Claim).where(Claim.id > after_id).order_by(Claim.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def delete_claim(session: Session, claim_id: int) -> bool:
    deleted = session.execute(delete(Claim).where(Claim.id == claim_id)).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(deleted)


@dataclass(frozen=True)
class ImportReport:
    added: int
    updated: int


def import_claims(session: Session, claims: Iterable[ClaimInput]) -> ImportReport:
    """Add new claims; a claim whose text is already stored gets the new verdict and sources."""
    by_text = {row.text: row for row in session.scalars(select(Claim))}
    added = updated = 0
    for claim in claims:
        text = claim.text.strip()
        row = by_text.get(text)
        if row is None:
            row = Claim(text=text, verdict=claim.verdict, sources=list(claim.sources))
            row.created_at = utc_now()
            session.add(row)
            by_text[text] = row
            added += 1
        elif row.verdict != claim.verdict or row.sources != list(claim.sources):
            row.verdict = claim.verdict
            row.sources = list(claim.sources)
            updated += 1
    session.commit()
    return ImportReport(added=added, updated=updated)
