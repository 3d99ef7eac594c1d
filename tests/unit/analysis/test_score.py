"""The trust score formula's edge cases."""

from __future__ import annotations

import pytest

from trustcard.analysis.score import trust_score
from trustcard.analysis.signals import Signal


def ok(name: str, score: float, confidence: float, evidence: str = "") -> Signal:
    return Signal(name, score, confidence, [evidence] if evidence else [])


def test_no_signals_at_all_is_unknown_with_no_score() -> None:
    trust = trust_score([])

    assert trust.score is None
    assert trust.label == "unknown"
    assert trust.confidence == 0.0


def test_only_missing_signals_is_unknown_and_names_them() -> None:
    trust = trust_score(
        [
            Signal.unavailable("deepfake", "no model installed"),
            Signal("ai_generated", None, 0.0, status="failed", detail="ValueError: boom"),
            Signal("fact_check", None, 0.0, status="timeout", detail="no result within 20 s"),
        ]
    )

    assert trust.score is None
    assert trust.label == "unknown"
    assert trust.missing_signals == ["deepfake", "ai_generated", "fact_check"]
    assert "ai_generated: failed, not counted (ValueError: boom)" in trust.explanation


def test_all_signals_clean_and_confident_is_trustworthy() -> None:
    trust = trust_score(
        [ok("ai_generated", 0.05, 0.7), ok("deepfake", 0.1, 0.8), ok("fact_check", 0.0, 0.3)],
        {"fact_check": 1.5},
    )

    # 100 * (1 - 0.035) * (1 - 0.08) * 1 = 88.78
    assert trust.score == 89
    assert trust.label == "trustworthy"
    # (0.7 + 0.8 + 1.5 * 0.3) / 3.5
    assert trust.confidence == pytest.approx(0.557, abs=0.001)
    assert trust.missing_signals == []


def test_one_strong_red_flag_is_not_averaged_away() -> None:
    trust = trust_score(
        [ok("ai_generated", 0.97, 0.9, "XMP says AI"), ok("deepfake", 0.0, 0.9), ok("x", 0.0, 0.9)]
    )

    assert trust.score == 13
    assert trust.label == "untrustworthy"
    assert trust.explanation[0] == (
        "ai_generated: risk 0.87 (score 0.97 x confidence 0.90): XMP says AI"
    )


def test_a_failed_analyzer_lowers_confidence_and_is_named() -> None:
    complete = trust_score([ok("ai_generated", 0.1, 0.6), ok("fact_check", 0.0, 0.6)])
    partial = trust_score(
        [
            ok("ai_generated", 0.1, 0.6),
            Signal("fact_check", None, 0.0, status="failed", detail="RuntimeError: db gone"),
        ]
    )

    assert partial.score == 94
    assert partial.confidence < complete.confidence
    assert partial.missing_signals == ["fact_check"]


def test_nothing_found_with_little_evidence_is_unknown_not_trustworthy() -> None:
    trust = trust_score([ok("ai_generated", 0.1, 0.1), Signal.unavailable("deepfake", "none")])

    assert trust.score == 99
    assert trust.label == "unknown"
    assert "too little could be checked" in trust.explanation[-1]


@pytest.mark.parametrize(
    ("risk", "label"), [(0.65, "untrustworthy"), (0.35, "questionable"), (0.25, "trustworthy")]
)
def test_label_bands(risk: float, label: str) -> None:
    assert trust_score([ok("fact_check", risk, 1.0)]).label == label
