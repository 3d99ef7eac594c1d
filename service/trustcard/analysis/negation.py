"""Does a caption repeat a claim, or quote it to deny or debunk it?

A matcher (lexical or by embedding) finds the caption words that resemble a rated claim; this
module looks for cue words *near those words* and weighs the match down when it finds one:

- debunking cues ("it is false that", "debunked", "myth", "hoax", "fact check", "not true",
  "misinformation", "no evidence", "stop sharing", ...) up to CUE_WORDS_BEFORE words before the
  matched span, inside it, or up to CUE_WORDS_AFTER words after it ("X? That's a myth.");
- plain negators ("not", "n't", "never", "no") inside the span or in the NEGATOR_WORDS_BEFORE
  word right before it ("No, drinking bleach does not cure covid"; not "Don't forget: ...").

A cue farther away is about something else and does not count. Words the claim itself contains are
no cue ("Masks do not work" repeated is not negated by its own "not").

What it cannot see: sarcasm and irony, negation by other words ("scientists have shown the
opposite"), quoting a debunk in order to mock it ("they say it's a hoax, but ..." counts as a
debunk), and other languages.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# The match's weight when the caption negates or debunks the claim: the signal keeps a trace of
# the topic (the claim is mentioned) but no longer says the post spreads it.
NEGATED_WEIGHT = 0.2
REPEATED_WEIGHT = 1.0
CUE_WORDS_BEFORE = 8
CUE_WORDS_AFTER = 6
NEGATOR_WORDS_BEFORE = 1

_APOSTROPHE = "['\u2019]"
_DEBUNK_CUES = [
    r"it\s+is\s+(?:false|not\s+true|a\s+(?:myth|hoax|lie))(?:\s+that)?",
    rf"it{_APOSTROPHE}s\s+(?:false|not\s+true|a\s+(?:myth|hoax|lie))(?:\s+that)?",
    r"fact[\s-]*check(?:ed|ers?|ing)?(?:\s*:\s*false)?",
    r"not\s+true(?:\s+that)?",
    r"(?:false|untrue|wrong|baseless|bogus|nonsense|busted)",
    r"debunk(?:ed|ing|s)?",
    r"myths?",
    r"hoax(?:es)?",
    r"(?:lies|a\s+lie)",
    r"(?:mis|dis)information",
    r"fake\s+news",
    r"conspiracy\s+theor(?:y|ies|ists?)",
    r"rumou?rs?",
    r"no\s+evidence",
    r"stop\s+sharing",
    rf"(?:don{_APOSTROPHE}t|do\s+not)\s+(?:believe|fall\s+for)",
    r"there\s+is\s+no\s+proof",
]
_NEGATORS = [r"not", rf"\w+n{_APOSTROPHE}t", r"never", r"no", r"nor", r"cannot"]
_DEBUNK = re.compile(r"\b(?:" + "|".join(_DEBUNK_CUES) + r")\b", re.IGNORECASE)
_NEGATOR = re.compile(r"\b(?:" + "|".join(_NEGATORS) + r")\b", re.IGNORECASE)
_WORD = re.compile(rf"\w+(?:{_APOSTROPHE}\w+)*")


class _Span(NamedTuple):
    start: int
    end: int


def negation_weight(caption: str, matched_span: str | None = None, *, claim: str = "") -> float:
    """REPEATED_WEIGHT (1.0) when the caption repeats the claim; NEGATED_WEIGHT when it denies it.

    `matched_span` is the caption text that resembled the claim (as written in the caption); cues
    count only near it. None, or a span the caption does not contain, means the whole caption.
    `claim` (optional) is the claim's text: its own words are never taken for cues.
    """
    negated = negation_cue(caption, matched_span, claim=claim) is not None
    return NEGATED_WEIGHT if negated else REPEATED_WEIGHT


def negation_cue(caption: str, matched_span: str | None = None, *, claim: str = "") -> str | None:
    """The cue (as written in the caption) that negates the claim near the span, if any.

    When the span occurs more than once, the caption repeats the claim if any occurrence lacks a
    cue: one plain repetition is enough to spread it.
    """
    occurrences = _occurrences(caption, matched_span)
    cues = [_cue_near(caption, span, claim) for span in occurrences]
    if not cues or any(cue is None for cue in cues):
        return None
    return next(cue for cue in cues if cue is not None)


def _occurrences(caption: str, matched_span: str | None) -> list[_Span]:
    span_text = (matched_span or "").strip()
    if not span_text:
        return [_Span(0, len(caption))]
    found = [_Span(m.start(), m.end()) for m in re.finditer(re.escape(span_text), caption)]
    if not found:
        lowered = caption.casefold()
        if len(lowered) == len(caption):  # casefold kept the offsets ("ß" would not)
            pattern = re.escape(span_text.casefold())
            found = [_Span(m.start(), m.end()) for m in re.finditer(pattern, lowered)]
    return found or [_Span(0, len(caption))]


def _cue_near(caption: str, span: _Span, claim: str) -> str | None:
    words = [_Span(m.start(), m.end()) for m in _WORD.finditer(caption)]
    before = [w for w in words if w.end <= span.start]
    after = [w for w in words if w.start >= span.end]
    debunk_from = before[-CUE_WORDS_BEFORE:][0].start if before else span.start
    debunk_to = after[:CUE_WORDS_AFTER][-1].end if after else span.end
    negator_from = before[-NEGATOR_WORDS_BEFORE:][0].start if before else span.start
    own_words = {m.group().casefold() for p in (_DEBUNK, _NEGATOR) for m in p.finditer(claim)}
    searches = ((_DEBUNK, debunk_from, debunk_to), (_NEGATOR, negator_from, span.end))
    for pattern, start, end in searches:
        for cue in pattern.finditer(caption, start, end):
            if cue.group().casefold() not in own_words:
                return " ".join(cue.group().split())
    return None
