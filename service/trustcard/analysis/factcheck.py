"""The fact-check stage: does the caption repeat a claim fact-checkers rated false?"""

from __future__ import annotations

from collections.abc import Sequence

from trustcard.analysis.claims import MATCH_THRESHOLD, Claim, match_claims
from trustcard.analysis.content import PostContent
from trustcard.analysis.signals import Signal

FACT_CHECK = "fact_check"
# How bad repeating a claim is, by its verdict; the signal's score is this times similarity.
VERDICT_SEVERITY = {"false": 1.0, "misleading": 0.8, "disputed": 0.6}
# Lexical matching cannot tell repeating a claim from quoting it to debunk it.
MATCH_CONFIDENCE = 0.7
# Matching nothing only says the caption repeats none of the claims the table knows.
NO_MATCH_CONFIDENCE = 0.3


class ClaimMatcher:
    """Matches the caption against a fixed set of claims (the claims table, loaded per run)."""

    name = FACT_CHECK
    version = f"lexical-1 (threshold {MATCH_THRESHOLD})"
    weight = 1.5

    def __init__(self, claims: Sequence[Claim]) -> None:
        self.claims = list(claims)

    def analyze(self, content: PostContent) -> Signal:
        if not self.claims:
            return Signal.unavailable(self.name, "the claims table is empty: nothing to match")
        if not content.caption.strip():
            return Signal.unavailable(self.name, "the post has no caption to check")
        matches = match_claims(content.caption, self.claims)
        data = {"claims_checked": len(self.claims), "matches": [m.as_dict() for m in matches]}
        if not matches:
            return Signal(
                name=self.name,
                score=0.0,
                confidence=NO_MATCH_CONFIDENCE,
                evidence=[f"no match among {len(self.claims)} known claims"],
                data=data,
                detail="the caption repeats none of the known claims",
            )
        best = max(matches, key=lambda m: m.similarity * VERDICT_SEVERITY[m.claim.verdict])
        evidence = [
            f"claim #{m.claim.id} rated {m.claim.verdict} (similarity {m.similarity:.2f}): "
            f'"{m.claim.text}"'
            + (f" — sources: {', '.join(m.claim.sources)}" if m.claim.sources else "")
            for m in matches
        ]
        return Signal(
            name=self.name,
            score=round(best.similarity * VERDICT_SEVERITY[best.claim.verdict], 3),
            confidence=MATCH_CONFIDENCE,
            evidence=evidence,
            data=data,
            detail=f"the caption repeats {len(matches)} known claim(s)",
        )
