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
words (1.0) or one inserted word (0.86) are. rapidfuzz runs the window loop in C++; claims that do
not share enough words with the whole caption are skipped before it.

What it can see: the claim's own words, inflected, reordered, with a word inserted, anywhere in a
long caption. What it cannot see: paraphrase with other words ("tracking chips in the jabs" is not
"vaccines contain microchips"), synonyms, typos that change the stem, other languages, and any
claim not in the table. Whether the caption repeats or debunks the claim is decided separately
(trustcard.analysis.negation), from cue words near `ClaimMatch.matched_span`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
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
_STEMMER = snowballstemmer.stemmer("english")
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
    return tuple(_STEMMER.stemWord(part) for part in parts if part not in _STOP_WORDS)


@lru_cache(maxsize=65_536)
def _claim_tokens(text: str) -> tuple[str, ...]:
    return tuple(tokens(text))


class _Windows:
    """The caption's windows of one length, as sorted code strings (each distinct one once)."""

    def __init__(self, codes: str, length: int) -> None:
        first_start: dict[str, int] = {}
        for start in range(len(codes) - length + 1):
            first_start.setdefault("".join(sorted(codes[start : start + length])), start)
        self.length = length
        self.choices = list(first_start)
        self.starts = list(first_start.values())


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
    code_of: dict[str, str] = {}
    for token in caption_tokens:
        code_of.setdefault(token.stem, _code(len(code_of)))
    codes = "".join(code_of[token.stem] for token in caption_tokens)
    windows: dict[int, _Windows] = {}
    cutoff = threshold * 100

    def windows_of(length: int) -> _Windows:
        if length not in windows:
            windows[length] = _Windows(codes, length)
        return windows[length]

    positions: dict[str, list[int]] = {}
    for index, code in enumerate(codes):
        positions.setdefault(code, []).append(index)
    matches = []
    for claim in claims:
        claim_codes = "".join(code_of.get(stem, _ABSENT) for stem in _claim_tokens(claim.text))
        size = len(claim_codes)
        # Cheap bounds first: how many claim words the caption holds at all, then whether enough
        # of them stand close together (within n + 1 words). Only then does rapidfuzz compare.
        needed = math.ceil(threshold * size - 1e-9)
        if size - claim_codes.count(_ABSENT) < needed:
            continue
        if len(codes) > size and not _close_enough(claim_codes, positions, needed, size + 1):
            continue
        found = _best_window(claim_codes, codes, windows_of, cutoff)
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


def _close_enough(
    claim_codes: str, positions: dict[str, list[int]], needed: int, span: int
) -> bool:
    """Whether `needed` caption occurrences of the claim's words fit in `span` words.

    Repeated occurrences of one word all count, so this can only over-estimate a window.
    """
    hits = sorted(
        index for code in set(claim_codes) if code != _ABSENT for index in positions[code]
    )
    if needed <= 0:
        return True
    return any(hits[i + needed - 1] - hits[i] < span for i in range(len(hits) - needed + 1))


def _code(index: int) -> str:
    """The one-character code of the caption's index-th distinct stem (never _ABSENT)."""
    point = index + 1
    return chr(point if point < 0xD800 else point + 0x800)  # skip the surrogate range


def _best_window(
    claim_codes: str, codes: str, windows_of: Callable[[int], _Windows], cutoff: float
) -> tuple[float, int, int] | None:
    """(similarity, start, length) of the caption window most like the claim, if >= cutoff %."""
    size = len(claim_codes)
    ordered = "".join(sorted(claim_codes))
    if len(codes) <= size:
        # The whole caption is the only window: the share of the claim's words it holds.
        shared = sum((Counter(claim_codes) & Counter(codes)).values())
        return (shared / size, 0, len(codes)) if shared * 100 >= cutoff * size else None
    best: tuple[float, int, int] | None = None
    for length in (size, size + 1):
        if length > len(codes):
            break
        candidates = windows_of(length)
        found = process.extractOne(
            ordered, candidates.choices, scorer=fuzz.ratio, score_cutoff=cutoff
        )
        # A longer window must do strictly better: the shorter span is the more precise quote.
        if found is not None and (best is None or found[1] / 100 > best[0]):
            best = (found[1] / 100, candidates.starts[found[2]], length)
    return best
