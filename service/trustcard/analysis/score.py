"""The trust score: one documented formula over whatever signals the analyzers produced.

Each signal with status "ok" has a risk score r (0..1, how likely the problem it looks for is
there) and a confidence c (0..1). Its effective risk is c * r. Signals combine like independent
warnings (a noisy-OR), so one strong red flag is not averaged away by signals that found nothing:

    score      = round(100 * prod(1 - c_i * r_i))    over the "ok" signals
    confidence = sum(w_i * c_i) / sum(w_i)          numerator: the "ok" signals,
                                                    denominator: every expected signal

w_i is the analyzer's weight (fact_check 1.5, others 1). A failed, timed-out or unavailable
signal adds nothing to the numerator, so missing signals lower the confidence, and it is named.

Label: no "ok" signal -> score None, "unknown"; score < 40 "untrustworthy"; < 70 "questionable";
otherwise "trustworthy" when confidence >= 0.25, else "unknown" (nothing wrong was found, but too
little could be checked to vouch for the post).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from trustcard.analysis.signals import Signal

TrustLabel = Literal["trustworthy", "questionable", "untrustworthy", "unknown"]
UNTRUSTWORTHY_BELOW = 40
QUESTIONABLE_BELOW = 70
MIN_CONFIDENCE_TO_VOUCH = 0.25


@dataclass(frozen=True)
class TrustScore:
    score: int | None
    label: TrustLabel
    confidence: float
    explanation: list[str] = field(default_factory=list)
    missing_signals: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trust_score(
    signals: Sequence[Signal], weights: Mapping[str, float] | None = None
) -> TrustScore:
    """Combine the signals of one post (one per expected analyzer) into a TrustScore."""
    weights = weights or {}
    explanation: list[str] = []
    missing: list[str] = []
    survival = 1.0
    known = 0.0
    expected = 0.0
    for signal in signals:
        weight = weights.get(signal.name, 1.0)
        expected += weight
        if signal.status != "ok" or signal.score is None:
            missing.append(signal.name)
            explanation.append(
                f"{signal.name}: {signal.status}, not counted"
                + (f" ({signal.detail})" if signal.detail else "")
            )
            continue
        risk = signal.confidence * signal.score
        survival *= 1.0 - risk
        known += weight * signal.confidence
        first = f": {signal.evidence[0]}" if signal.evidence else ""
        explanation.append(
            f"{signal.name}: risk {risk:.2f} (score {signal.score:.2f} x confidence "
            f"{signal.confidence:.2f}){first}"
        )
    confidence = round(known / expected, 3) if expected else 0.0
    if expected == 0 or not math.isfinite(survival) or len(missing) == len(signals):
        explanation.append("no analyzer produced a signal: nothing to score")
        return TrustScore(None, "unknown", 0.0, explanation, missing)
    score = round(100 * survival)
    label = _label(score, confidence)
    if label == "unknown":
        explanation.append(
            f"nothing wrong found, but confidence {confidence:.2f} is below "
            f"{MIN_CONFIDENCE_TO_VOUCH}: too little could be checked to vouch for the post"
        )
    return TrustScore(score, label, confidence, explanation, missing)


def _label(score: int, confidence: float) -> TrustLabel:
    if score < UNTRUSTWORTHY_BELOW:
        return "untrustworthy"
    if score < QUESTIONABLE_BELOW:
        return "questionable"
    return "trustworthy" if confidence >= MIN_CONFIDENCE_TO_VOUCH else "unknown"
