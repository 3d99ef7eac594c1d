"""Claims the fact-check stage matches captions against: add, list, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from sqlalchemy.orm import Session

from trustcard.api.database import run_db
from trustcard.api.deps import ResourcesDep
from trustcard.api.routes.analysis import UNAVAILABLE
from trustcard.api.schemas import ClaimIn, ClaimOut, ClaimPage, ErrorBody
from trustcard.api.security import ADMIN_ONLY, CallerDep
from trustcard.db import repository
from trustcard.db.models import Claim

router = APIRouter(prefix="/claims", tags=["claims"])

MAX_CLAIMS_PAGE = 500
# Ids are 32-bit on PostgreSQL: larger ones are refused (422), not sent to the database.
MAX_ID = 2**31 - 1


def claim_out(claim: Claim) -> ClaimOut:
    return ClaimOut(
        id=claim.id,
        text=claim.text,
        verdict=claim.verdict,
        sources=list(claim.sources),
        created_at=claim.created_at,
    )


@router.post("", status_code=201, response_model=ClaimOut, responses={**ADMIN_ONLY, **UNAVAILABLE})
async def add_claim(body: ClaimIn, res: ResourcesDep, caller: CallerDep) -> ClaimOut:
    """Add a known false, disputed or misleading claim (an admin key, when keys are on)."""
    caller.require_admin("changing the shared claims table")
    claim = repository.ClaimInput(text=body.text, verdict=body.verdict, sources=body.sources)
    return await run_db(res, lambda session: claim_out(repository.add_claim(session, claim)))


@router.get("", response_model=ClaimPage, responses=UNAVAILABLE)
@router.get("/", response_model=ClaimPage, include_in_schema=False)
async def list_claims(
    res: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=MAX_CLAIMS_PAGE)] = 100,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ClaimPage:
    """Claims by id; pass `next_after_id` as `after_id` for the next page."""

    def page(session: Session) -> ClaimPage:
        rows = repository.list_claims(session, limit + 1, after_id)
        items = [claim_out(row) for row in rows[:limit]]
        return ClaimPage(items=items, next_after_id=items[-1].id if len(rows) > limit else None)

    return await run_db(res, page)


@router.delete(
    "/{claim_id}",
    status_code=204,
    response_class=Response,
    responses={
        404: {"model": ErrorBody, "description": "No claim with this id"},
        **ADMIN_ONLY,
        **UNAVAILABLE,
    },
)
async def delete_claim(
    claim_id: Annotated[int, Path(ge=1, le=MAX_ID)], res: ResourcesDep, caller: CallerDep
) -> Response:
    """Delete a claim (an admin key, when keys are on); stored analyses keep their matches."""
    caller.require_admin("changing the shared claims table")
    if not await run_db(res, lambda session: repository.delete_claim(session, claim_id)):
        raise HTTPException(status_code=404, detail=f"claim {claim_id} not found")
    return Response(status_code=204)
