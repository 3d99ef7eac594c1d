"""Known false, disputed or misleading claims, and matching a caption against them.

Matching is lexical, on purpose simple enough to explain in one paragraph: both texts are
normalised (Unicode NFKD without accents, case-folded, punctuation, URLs and '#'/'@' removed,
English stop words dropped, a crude suffix stemmer so "vaccines contain" equals "vaccine
contains"); the claim's token sequence is compared with every window of the caption of about the
claim's length. A window's similarity is the lower of difflib's ratio (2 * matching tokens /
total tokens, order-aware) and the share of the claim's tokens it matched, so a window can
neither skip a key word nor bury the claim in other words. The best window's similarity counts;
MATCH_THRESHOLD decides a match. Consequence: one changed or missing key word in a three-word
claim (0.67) is not a match; an inflection, or one inserted word (0.86), is. What
it cannot see: negation and sarcasm (a caption debunking a claim matches it too), paraphrase with
other words, other languages, and any claim not in the table.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

Verdict = Literal["false", "disputed", "misleading"]
VERDICTS: tuple[Verdict, ...] = ("false", "disputed", "misleading")

MATCH_THRESHOLD = 0.75
MAX_MATCHES = 5

_URL = re.compile(r"https?://\S+|www\.\S+")
_NON_WORD = re.compile(r"[^\w]+")
_STOP_WORDS_TEXT = """
a an and are as at be been being but by can could did do does for from had has have he her his
i if in into is it its just me my of on or our she so than that the their them then there these
they this those to too us very was we were what when which who will with would you your
"""
_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
_SIBILANT_ES = ("sses", "xes", "zes", "ches", "shes")


@dataclass(frozen=True)
class Claim:
    """A claim fact-checkers rated, with where their verdict is published."""

    id: int
    text: str
    verdict: str
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict must be one of {', '.join(VERDICTS)}")
        if not tokens(self.text):
            raise ValueError(f"claim {self.id}: text has no words to match")


@dataclass(frozen=True)
class ClaimMatch:
    """A claim the caption resembles, and the caption words that resembled it."""

    claim: Claim
    similarity: float
    matched_text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim_id": self.claim.id,
            "claim": self.claim.text,
            "verdict": self.claim.verdict,
            "sources": list(self.claim.sources),
            "similarity": self.similarity,
            "matched_text": self.matched_text,
        }


def tokens(text: str) -> list[str]:
    """The normalised, stemmed content words of a text, in order."""
    text = _URL.sub(" ", text)
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    words = _NON_WORD.sub(" ", plain.replace("_", " ")).split()
    return [_stem(word) for word in words if word not in _STOP_WORDS]


def _stem(word: str) -> str:
    """A crude English stemmer: plural and -ed/-ing endings, then a final "e" (fake = faked)."""
    if len(word) <= 3 or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(_SIBILANT_ES):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    elif word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("ed") and len(word) > 4:
        word = word[:-2]
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def match_claims(
    caption: str,
    claims: Sequence[Claim],
    *,
    threshold: float = MATCH_THRESHOLD,
    limit: int = MAX_MATCHES,
) -> list[ClaimMatch]:
    """Claims the caption repeats (similarity >= threshold), most similar first."""
    caption_tokens = tokens(caption)
    if not caption_tokens:
        return []
    caption_counts = Counter(caption_tokens)
    matches = []
    for claim in claims:
        claim_tokens = list(_claim_tokens(claim.text))
        # No window can match more claim tokens than the whole caption holds: skip early.
        if _shared(Counter(claim_tokens), caption_counts) < threshold * len(claim_tokens):
            continue
        similarity, window = _best_window(claim_tokens, caption_tokens, threshold)
        if similarity >= threshold:
            matches.append(ClaimMatch(claim, round(similarity, 3), " ".join(window)))
    matches.sort(key=lambda match: (-match.similarity, match.claim.id))
    return matches[:limit]


@lru_cache(maxsize=65_536)
def _claim_tokens(text: str) -> tuple[str, ...]:
    return tuple(tokens(text))


def _shared(first: Counter[str], second: Counter[str]) -> int:
    return sum((first & second).values())


def _best_window(
    claim_tokens: list[str], caption_tokens: list[str], floor: float
) -> tuple[float, list[str]]:
    """The caption window most like the claim (if any reaches `floor`), lengths around its own.

    Each window's shared-token count (kept up to date while sliding) bounds its similarity, so
    difflib only runs on windows that could reach the floor and beat the best so far.
    """
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(claim_tokens)
    claim_counts = Counter(claim_tokens)
    size = len(claim_tokens)
    best: tuple[float, list[str]] = (0.0, [])
    for length in sorted({max(1, min(n, len(caption_tokens))) for n in (size - 1, size, size + 1)}):
        window_counts = Counter(caption_tokens[:length])
        shared = _shared(window_counts, claim_counts)
        for start in range(len(caption_tokens) - length + 1):
            if start:
                leaving, entering = caption_tokens[start - 1], caption_tokens[start + length - 1]
                if window_counts[leaving] <= claim_counts[leaving]:
                    shared -= 1
                window_counts[leaving] -= 1
                window_counts[entering] += 1
                if window_counts[entering] <= claim_counts[entering]:
                    shared += 1
            bound = min(2 * shared / (size + length), shared / size)
            if bound < floor or bound <= best[0]:
                continue
            window = caption_tokens[start : start + length]
            matcher.set_seq1(window)
            matched = sum(block.size for block in matcher.get_matching_blocks())
            similarity = min(2 * matched / (size + length), matched / size)
            if similarity > best[0]:
                best = (similarity, window)
    return best
