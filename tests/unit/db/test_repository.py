"""Repository functions on SQLite and PostgreSQL: dedup, progress, idempotent results, claims."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trustcard.db import repository as repo
from trustcard.db.models import Analysis, Claim, StageResult, utc_now

URL = "https://www.instagram.com/p/{}/"


def _submit(session: Session, shortcode: str = "Cabc12345", force: bool = False) -> repo.Submission:
    analysis_id = str(uuid.uuid4())
    return repo.submit_analysis(
        session,
        analysis_id=analysis_id,
        url=URL.format(shortcode),
        shortcode=shortcode,
        request={"url": URL.format(shortcode)},
        task_id=str(uuid.uuid4()),
        trace_id="ab" * 16,
        force=force,
    )


STAGES = [
    repo.StageRecord("extract", "ok", {"source": "supplied"}, None, 0.01),
    repo.StageRecord("ai_generated", "ok", {"score": 0.9}, "PNG text chunk", 0.2),
    repo.StageRecord("deepfake", "unavailable", None, "no model installed", 0.0),
]


def _store(session: Session, analysis_id: str, score: float = 12.0) -> Analysis:
    return repo.store_result(
        session,
        analysis_id,
        result={"trust": {"score": score}},
        stages=STAGES,
        trust_score=score,
        trust_label="low",
    )


def _count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_new_post_creates_a_pending_analysis(session: Session) -> None:
    submission = _submit(session)
    assert submission.created
    stored = repo.get_analysis(session, submission.analysis.id)
    assert stored is not None
    assert (stored.status, stored.percent, stored.shortcode) == ("pending", 0, "Cabc12345")
    assert stored.created_at.tzinfo is not None
    assert stored.trace_id == "ab" * 16


def test_the_same_post_while_running_returns_the_running_analysis(session: Session) -> None:
    first = _submit(session)
    second = _submit(session)
    assert not second.created
    assert second.analysis.id == first.analysis.id
    assert _count(session, Analysis) == 1
    # Other posts are independent.
    assert _submit(session, "Cother9999").created


def test_force_starts_a_new_analysis_that_later_submissions_join(session: Session) -> None:
    first = _submit(session)
    forced = _submit(session, force=True)
    assert forced.created
    assert forced.analysis.id != first.analysis.id
    assert _submit(session).analysis.id == forced.analysis.id
    assert _count(session, Analysis) == 2


def test_a_finished_analysis_does_not_block_a_new_one(session: Session) -> None:
    first = _submit(session)
    _store(session, first.analysis.id)
    again = _submit(session)
    assert again.created
    failed = again.analysis.id
    repo.mark_failed(session, failed, "post not found")
    assert _submit(session).created


def test_a_processing_analysis_past_every_time_limit_is_abandoned(session: Session) -> None:
    stuck = _submit(session).analysis
    repo.start_processing(session, stuck.id, "task-1")
    limit = timedelta(seconds=1500)
    # Recent enough: still joined.
    joined = repo.submit_analysis(
        session,
        analysis_id=str(uuid.uuid4()),
        url=stuck.url,
        shortcode=stuck.shortcode,
        request={},
        task_id="t",
        stale_after=limit,
    )
    assert joined.analysis.id == stuck.id
    stuck.started_at = utc_now() - limit - timedelta(seconds=1)
    session.commit()
    fresh = repo.submit_analysis(
        session,
        analysis_id=str(uuid.uuid4()),
        url=stuck.url,
        shortcode=stuck.shortcode,
        request={},
        task_id="t2",
        stale_after=limit,
    )
    assert fresh.created
    session.expire_all()
    old = repo.get_analysis(session, stuck.id)
    assert old is not None
    assert old.status == "failed"
    assert old.error is not None
    assert old.error.startswith("abandoned: no result 1500 s after it started")


def test_only_one_running_analysis_per_post_even_without_the_check(session: Session) -> None:
    # The unique key is what stops two API replicas racing on the same post.
    _submit(session)
    session.add(
        Analysis(
            id=str(uuid.uuid4()),
            url=URL.format("Cabc12345"),
            shortcode="Cabc12345",
            running_shortcode="Cabc12345",
            status="pending",
            percent=0,
            request={},
            created_at=utc_now(),
        )
    )
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_processing_and_stage_progress(session: Session) -> None:
    analysis_id = _submit(session).analysis.id
    assert repo.start_processing(session, "0" * 36, "task") is None
    started = repo.start_processing(session, analysis_id, "task-1")
    assert started is not None
    assert (started.status, started.task_id) == ("processing", "task-1")
    assert started.started_at is not None
    repo.mark_stage(session, analysis_id, "fact_check", 50)
    session.expire_all()
    stored = repo.get_analysis(session, analysis_id)
    assert stored is not None
    assert (stored.status, stored.stage, stored.percent) == ("processing", "fact_check", 50)


def test_storing_the_same_result_twice_leaves_one_row_per_stage(session: Session) -> None:
    analysis_id = _submit(session).analysis.id
    repo.start_processing(session, analysis_id, "task-1")
    first = _store(session, analysis_id, score=12.0)
    finished_at = first.finished_at
    # A redelivered task runs again and stores again (with a slightly different outcome).
    repo.start_processing(session, analysis_id, "task-1")
    second = _store(session, analysis_id, score=14.0)
    assert _count(session, Analysis) == 1
    assert _count(session, StageResult) == len(STAGES)
    assert second.status == "completed"
    assert second.trust_score == 14.0
    assert second.finished_at == finished_at
    assert [stage.name for stage in second.stages] == [s.name for s in STAGES]
    assert second.running_shortcode is None
    # Progress reports of a late duplicate run cannot reopen a completed analysis.
    repo.mark_stage(session, analysis_id, "extract", 0)
    repo.mark_failed(session, analysis_id, "late failure")
    session.expire_all()
    stored = repo.get_analysis(session, analysis_id)
    assert stored is not None
    assert (stored.status, stored.percent, stored.error) == ("completed", 100, None)


def test_store_result_for_an_unknown_analysis_says_so(session: Session) -> None:
    with pytest.raises(LookupError, match="does not exist"):
        _store(session, str(uuid.uuid4()))


def test_mark_failed_keeps_the_reason(session: Session) -> None:
    analysis_id = _submit(session).analysis.id
    repo.mark_failed(session, analysis_id, "the post page is unreachable")
    session.expire_all()
    stored = repo.get_analysis(session, analysis_id)
    assert stored is not None
    assert (stored.status, stored.error) == ("failed", "the post page is unreachable")
    assert stored.finished_at is not None


def test_deleting_an_analysis_deletes_its_stages(session: Session) -> None:
    analysis_id = _submit(session).analysis.id
    _store(session, analysis_id)
    stored = repo.get_analysis(session, analysis_id)
    session.delete(stored)
    session.commit()
    assert _count(session, StageResult) == 0


def test_listing_is_newest_first_with_a_stable_cursor(session: Session) -> None:
    base = utc_now()
    ids = []
    for index in range(7):
        submission = _submit(session, f"Cpost{index:05d}")
        # Two share a timestamp: the id breaks the tie, so the cursor skips and repeats nothing.
        submission.analysis.created_at = base + timedelta(seconds=min(index, 5))
        ids.append(submission.analysis.id)
    session.commit()
    expected = [
        analysis.id
        for analysis in sorted(
            (repo.get_analysis(session, i) for i in ids),
            key=lambda a: (a.created_at, a.id) if a else (base, ""),
            reverse=True,
        )
        if analysis is not None
    ]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = repo.list_analyses(session, limit=3, cursor=cursor)
        seen += [analysis.id for analysis in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    assert pages == 3
    # A later submission does not shift the pages of a cursor handed out earlier.
    first = repo.list_analyses(session, limit=3)
    _submit(session, "Cnewest000")
    assert repo.list_analyses(session, limit=3, cursor=first.next_cursor).items[0].id == seen[3]


@pytest.mark.parametrize(
    "cursor", ["garbage!", "W10", "12.not-a-uuid", "12345678901234567.0" + "0" * 35]
)
def test_an_invalid_cursor_is_refused(session: Session, cursor: str) -> None:
    with pytest.raises(repo.InvalidCursor, match="invalid cursor"):
        repo.list_analyses(session, limit=3, cursor=cursor)


def test_claims_add_list_delete(session: Session) -> None:
    added = repo.add_claim(
        session, repo.ClaimInput("  The moon landing was faked ", "false", ["https://a.example"])
    )
    other = repo.add_claim(session, repo.ClaimInput("5G spreads viruses", "false", []))
    assert added.text == "The moon landing was faked"
    assert [c.id for c in repo.list_claims(session)] == [added.id, other.id]
    assert [c.id for c in repo.list_claims(session, limit=1, after_id=added.id)] == [other.id]
    assert repo.delete_claim(session, added.id)
    assert not repo.delete_claim(session, added.id)
    assert [c.id for c in repo.list_claims(session)] == [other.id]


def test_claim_input_is_validated() -> None:
    with pytest.raises(ValueError, match="verdict 'true' is not one of false, disputed"):
        repo.ClaimInput("text", "true", [])
    with pytest.raises(ValueError, match="empty"):
        repo.ClaimInput("  ", "false", [])


def test_importing_claims_twice_updates_instead_of_duplicating(session: Session) -> None:
    claims = [
        repo.ClaimInput("Vaccines contain microchips", "false", ["https://f.example/1"]),
        repo.ClaimInput("The election was stolen", "disputed", []),
    ]
    assert repo.import_claims(session, claims) == repo.ImportReport(added=2, updated=0)
    assert repo.import_claims(session, claims) == repo.ImportReport(added=0, updated=0)
    changed = [repo.ClaimInput("The election was stolen", "false", ["https://f.example/2"])]
    assert repo.import_claims(session, changed) == repo.ImportReport(added=0, updated=1)
    assert _count(session, Claim) == 2
    stolen = session.scalar(select(Claim).where(Claim.text == "The election was stolen"))
    assert stolen is not None
    assert (stolen.verdict, stolen.sources) == ("false", ["https://f.example/2"])
