"""The fact-check stage: does the caption repeat a claim fact-checkers rated false?

Each match found by the lexical matcher (trustcard.analysis.claims) is weighed by
trustcard.analysis.negation: a caption that debunks or denies the claim near the matched words
("it is false that ...", "myth", "does not") counts NEGATED_WEIGHT of one that repeats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from trustcard.analysis.claims import MATCH_THRESHOLD, Claim, ClaimMatch, match_claims
from trustcard.analysis.content import PostContent
from trustcard.analysis.negation import NEGATED_WEIGHT, REPEATED_WEIGHT, negation_cue
from trustcard.analysis.signals import Signal

FACT_CHECK = "fact_check"
# How bad repeating a claim is, by its verdict; the signal's score is this times similarity times
# the negation weight (1.0 repeated, NEGATED_WEIGHT debunked).
VERDICT_SEVERITY = {"false": 1.0, "misleading": 0.8, "disputed": 0.6}
# Lexical matching misses paraphrase, and cue words miss sarcasm and other ways of denying.
MATCH_CONFIDENCE = 0.7
# Matching nothing only says the caption repeats none of the claims the table knows.
NO_MATCH_CONFIDENCE = 0.3


class ClaimMatcher:
    """Matches the caption against a fixed set of claims (the claims table, loaded per run)."""

    name = FACT_CHECK
    version = f"lexical-2 (rapidfuzz, threshold {MATCH_THRESHOLD}, negation cues)"
    weight = 1.5

    def __init__(self, claims: Sequence[Claim]) -> None:
        self.claims = list(claims)

    def analyze(self, content: PostContent) -> Signal:
        if not self.claims:
            return Signal.unavailable(self.name, "the claims table is empty: nothing to match")
        if not content.caption.strip():
            return Signal.unavailable(self.name, "the post has no caption to check")
        caption = content.caption
        matches = [
            _Weighed(m, negation_cue(caption, m.matched_span, claim=m.claim.text))
            for m in match_claims(caption, self.claims)
        ]
        data = {
            "claims_checked": len(self.claims),
            "matches": [w.match.as_dict() | {"negation_cue": w.cue} for w in matches],
        }
        if not matches:
            return Signal(
                name=self.name,
                score=0.0,
                confidence=NO_MATCH_CONFIDENCE,
                evidence=[f"no match among {len(self.claims)} known claims"],
                data=data,
                detail="the caption repeats none of the known claims",
            )
        best = max(matches, key=lambda w: w.score)
        negated = sum(w.cue is not None for w in matches)
        return Signal(
            name=self.name,
            score=round(best.score, 3),
            confidence=MATCH_CONFIDENCE,
            evidence=[w.evidence() for w in matches],
            data=data,
            detail=(
                f"the caption repeats {len(matches) - negated} known claim(s)"
                + (f" and negates {negated}" if negated else "")
            ),
        )


class _Weighed(NamedTuple):
    """A match and the negation cue near it (None: the caption repeats the claim)."""

    match: ClaimMatch
    cue: str | None

    @property
    def score(self) -> float:
        weight = REPEATED_WEIGHT if self.cue is None else NEGATED_WEIGHT
        return self.match.similarity * VERDICT_SEVERITY[self.match.claim.verdict] * weight

    def evidence(self) -> str:
        m = self.match
        return (
            f"claim #{m.claim.id} rated {m.claim.verdict} (similarity {m.similarity:.2f}"
            + (f", negated (cue: {self.cue!r})" if self.cue else "")
            + f'): "{m.claim.text}"'
            + (f" — sources: {', '.join(m.claim.sources)}" if m.claim.sources else "")
        )
