"""Known false, disputed or misleading claims, and matching a caption against them.

Matching is lexical, simple enough to explain in one paragraph. Both texts are normalised
(Unicode NFKD without accents, case-folded, URLs removed, punctuation and '#'/'@' dropped, English
stop words dropped, words reduced to their Snowball (Porter 2) stem so "vaccines contain" equals
"vaccine contains"). A claim of n words is compared with every caption window of n and n + 1
words, order ignored: the window's similarity is rapidfuzz's Indel ratio of the two sorted word
sequences (each stem coded as one character, so the ratio counts shared *words*), which for an
n-word window is the share of the claim's words it holds and for an (n + 1)-word window
2 * shared / (2n + 1). The best window counts; MATCH_THRESHOLD decides a match. Consequences: one
changed or missing key word in a three-word claim (0.67) is not a match; an inflection, reordered
words (1.0) or one inserted word (0.86) are. Of equally similar windows the one closest to the
claim's word order is quoted. Speed: a claim is skipped when the caption does not hold enough of
its words, or not close enough together; rapidfuzz (C++) scores only the windows that hold enough
of them.

What it can see: the claim's own words, inflected, reordered, with a word inserted, anywhere in a
long caption. What it cannot see: paraphrase with other words ("tracking chips in the jabs" is not
"vaccines contain microchips"), synonyms, typos that change the stem, other languages, and any
claim not in the table. Whether the caption repeats or debunks the claim is decided separately
(trustcard.analysis.negation), from cue words near `ClaimMatch.matched_span`.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import snowballstemmer
from rapidfuzz import fuzz, process

Verdict = Literal["false", "disputed", "misleading"]
VERDICTS: tuple[Verdict, ...] = ("false", "disputed", "misleading")

MATCH_THRESHOLD = 0.75
MAX_MATCHES = 5

_URL = re.compile(r"https?://\S+|www\.\S+")
# A word: letters/digits (not "_") plus any combining marks, so decomposed accents stay inside it.
_WORD = re.compile(
    r"(?:[^\W_]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f])+"
)
_NON_WORD = re.compile(r"[\W_]+")
_STOP_WORDS_TEXT = """
a an and are as at be been being but by can could did do does for from had has have he her his
i if in into is it its just me my of on or our she so than that the their them then there these
they this those to too us very was we were what when which who will with would you your
"""
_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
# A Snowball stemmer keeps the word being stemmed in itself: one per thread (analyzers run in
# threads, and a timed-out one may still be running beside the next).
_stemmers = threading.local()
# Claim words the caption does not hold all get this code: it matches no caption window.
_ABSENT = "\x00"


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
    """A claim the caption resembles, and the caption words that resembled it.

    `matched_text` is the window's normalised stems; `matched_span` the same window as written in
    the caption (from its first to its last word), for people and for negation cues.
    """

    claim: Claim
    similarity: float
    matched_text: str
    matched_span: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim_id": self.claim.id,
            "claim": self.claim.text,
            "verdict": self.claim.verdict,
            "sources": list(self.claim.sources),
            "similarity": self.similarity,
            "matched_text": self.matched_text,
            "matched_span": self.matched_span,
        }


class Token(NamedTuple):
    """A normalised stem and where its word is in the original text."""

    stem: str
    start: int
    end: int


def tokens(text: str) -> list[str]:
    """The normalised, stemmed content words of a text, in order."""
    return [token.stem for token in located_tokens(text)]


def located_tokens(text: str) -> list[Token]:
    """The normalised, stemmed content words of a text with their character spans in it."""
    text = _URL.sub(lambda url: " " * len(url.group()), text)
    found = []
    for word in _WORD.finditer(text):
        for part in _normalise_word(word.group()):
            found.append(Token(part, word.start(), word.end()))
    return found


@lru_cache(maxsize=131_072)
def _normalise_word(word: str) -> tuple[str, ...]:
    decomposed = unicodedata.normalize("NFKD", word)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    # NFKD can split one written word (the fraction one-half becomes "1", slash, "2"): parts.
    parts = _NON_WORD.sub(" ", plain).split()
    return tuple(stem(part) for part in parts if part not in _STOP_WORDS)


def stem(word: str) -> str:
    """The Snowball (Porter 2) English stem of a normalised word."""
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        stemmer = _stemmers.english = snowballstemmer.stemmer("english")
    result: str = stemmer.stemWord(word)
    return result


@lru_cache(maxsize=65_536)
def _claim_tokens(text: str) -> tuple[str, ...]:
    return tuple(tokens(text))


def match_claims(
    caption: str,
    claims: Sequence[Claim],
    *,
    threshold: float = MATCH_THRESHOLD,
    limit: int = MAX_MATCHES,
) -> list[ClaimMatch]:
    """Claims the caption repeats (similarity >= threshold), most similar first."""
    caption_tokens = located_tokens(caption)
    if not caption_tokens:
        return []
    coded = _CodedCaption([token.stem for token in caption_tokens])
    matches = []
    for claim in claims:
        found = coded.best_window(_claim_tokens(claim.text), threshold)
        if found is None:
            continue
        similarity, start, length = found
        window = caption_tokens[start : start + length]
        matches.append(
            ClaimMatch(
                claim,
                round(similarity, 3),
                " ".join(token.stem for token in window),
                caption[window[0].start : window[-1].end],
            )
        )
    matches.sort(key=lambda match: (-match.similarity, match.claim.id))
    return matches[:limit]


class _CodedCaption:
    """A caption's stems, each coded as one character, with what the window search needs."""

    def __init__(self, stems: list[str]) -> None:
        self.code_of: dict[str, str] = {}
        for stem in stems:
            self.code_of.setdefault(stem, _code(len(self.code_of)))
        self.codes = "".join(self.code_of[stem] for stem in stems)
        self.positions: dict[str, list[int]] = {}
        for index, code in enumerate(self.codes):
            self.positions.setdefault(code, []).append(index)
        self._sorted_windows: dict[int, list[str]] = {}

    def best_window(
        self, claim_stems: Sequence[str], threshold: float
    ) -> tuple[float, int, int] | None:
        """(similarity, start, length) of the window most like the claim, if >= threshold."""
        claim_codes = "".join(self.code_of.get(stem, _ABSENT) for stem in claim_stems)
        size = len(claim_codes)
        needed = math.ceil(threshold * size - 1e-9)  # claim words a window must hold
        # Cheap bound first: how many of the claim's words the caption holds at all.
        if size - claim_codes.count(_ABSENT) < needed:
            return None
        if len(self.codes) <= size:
            # The whole caption is the only window: the share of the claim's words it holds.
            shared = sum((Counter(claim_codes) & Counter(self.codes)).values())
            return (shared / size, 0, len(self.codes)) if shared >= needed else None
        hits = sorted(
            index for code in set(claim_codes) if code != _ABSENT for index in self.positions[code]
        )
        ordered = "".join(sorted(claim_codes))
        best: tuple[float, int, int] | None = None
        for length in (size, size + 1):
            starts = _starts_holding(hits, max(needed, 1), length, len(self.codes))
            if not starts:
                continue
            windows = self._windows(length)
            found = process.extract(
                ordered,
                [windows[start] for start in starts],
                scorer=fuzz.ratio,
                score_cutoff=threshold * 100,
                limit=None,
            )
            if not found:
                continue
            top = found[0][1]
            # A longer window must do strictly better: the shorter span is the more precise quote.
            if best is not None and top / 100 <= best[0]:
                continue
            # Of the equally good windows, the one whose word order is closest to the claim's:
            # "the earth is not flat" rather than "flat earthers, the earth".
            tied = [starts[i] for _, score, i in found if score == top]
            start = tied[0]
            if len(tied) > 1:
                start = max(
                    tied, key=lambda s: (fuzz.ratio(claim_codes, self.codes[s : s + length]), -s)
                )
            best = (top / 100, start, length)
            # No (n + 1)-word window can beat 2n / (2n + 1).
            if best[0] >= 2 * size / (2 * size + 1):
                break
        return best

    def _windows(self, length: int) -> list[str]:
        """Every window of `length` codes, sorted (the order-free form), by start."""
        if length not in self._sorted_windows:
            self._sorted_windows[length] = [
                "".join(sorted(self.codes[start : start + length]))
                for start in range(len(self.codes) - length + 1)
            ]
        return self._sorted_windows[length]


def _starts_holding(hits: list[int], needed: int, length: int, caption_length: int) -> list[int]:
    """Starts of the windows of `length` that hold at least `needed` of the sorted hit positions.

    Repeated occurrences of one word all count, so this can only over-estimate a window; windows
    it leaves out cannot reach the threshold, and rapidfuzz never sees them.
    """
    starts: set[int] = set()
    last_start = caption_length - length
    for i in range(len(hits) - needed + 1):
        first, last = hits[i], hits[i + needed - 1]
        if last - first < length:
            starts.update(range(max(0, last - length + 1), min(first, last_start) + 1))
    return sorted(starts)


def _code(index: int) -> str:
    """The one-character code of the caption's index-th distinct stem (never _ABSENT)."""
    point = index + 1
    return chr(point if point < 0xD800 else point + 0x800)  # skip the surrogate range
