"""Claim matching: hits, near misses, unrelated captions, and the fact_check signal."""

from __future__ import annotations

import pytest

from trustcard.analysis.claims import MATCH_THRESHOLD, Claim, match_claims, tokens
from trustcard.analysis.content import PostContent
from trustcard.analysis.factcheck import ClaimMatcher

URL = "https://www.instagram.com/p/CxYz123AbCd/"
MICROCHIPS = Claim(1, "Vaccines contain microchips", "false", ["https://factcheck.example/1"])
MOON = Claim(2, "The moon landing was faked in a studio", "false", [])
FIVE_G = Claim(3, "5G towers spread the coronavirus", "disputed", ["https://factcheck.example/3"])
CLAIMS = [MICROCHIPS, MOON, FIVE_G]


def test_normalisation_ignores_case_accents_punctuation_urls_and_inflection() -> None:
    assert tokens("Vaccines CONTAIN micro-chips! https://x.example/a") == [
        "vaccin",
        "contain",
        "micro",
        "chip",
    ]
    assert tokens("Café faked") == tokens("cafe fake")


@pytest.mark.parametrize(
    "caption",
    [
        "BREAKING: the covid vaccine contains a microchip to track you #wakeup",
        "They won't tell you: vaccines contain microchips!!!",
        "Proof the Moon landing was faked in a Hollywood studio 🎬",
        "5G towers spread coronavirus, share before they delete this",
    ],
)
def test_captions_repeating_a_claim_match_it(caption: str) -> None:
    matches = match_claims(caption, CLAIMS)

    assert len(matches) == 1
    assert matches[0].similarity >= MATCH_THRESHOLD


def test_exact_repetition_has_similarity_one() -> None:
    [match] = match_claims("vaccines contain microchips", CLAIMS)
    assert match.similarity == 1.0
    assert match.matched_text == "vaccin contain microchip"


@pytest.mark.parametrize(
    "caption",
    [
        "Vaccines contain vitamins and antibodies",  # one key word differs
        "The moon landing was filmed live on television",  # same topic, other claim
        "5G towers are being installed in our town",
    ],
)
def test_near_misses_do_not_match(caption: str) -> None:
    assert match_claims(caption, CLAIMS) == []


def test_unrelated_and_empty_captions_match_nothing() -> None:
    assert match_claims("Lovely sunset at the lake with friends", CLAIMS) == []
    assert match_claims("!!! ... ###", CLAIMS) == []


def test_claims_are_validated() -> None:
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim(9, "Something", "true", [])
    with pytest.raises(ValueError, match="no words"):
        Claim(9, "the a an", "false", [])


def test_fact_check_signal_carries_claim_verdict_sources_and_similarity() -> None:
    content = PostContent.from_caption(URL, "5G towers spread the coronavirus!")

    signal = ClaimMatcher(CLAIMS).analyze(content)

    assert signal.status == "ok"
    # A disputed claim weighs 0.6 of a false one.
    assert signal.score == 0.6
    assert signal.confidence == 0.7
    [match] = signal.data["matches"]
    assert match == {
        "claim_id": 3,
        "claim": FIVE_G.text,
        "verdict": "disputed",
        "sources": ["https://factcheck.example/3"],
        "similarity": 1.0,
        "matched_text": "5g tower spread coronavirus",
    }
    assert "claim #3 rated disputed (similarity 1.00)" in signal.evidence[0]


def test_fact_check_without_a_match_says_little() -> None:
    signal = ClaimMatcher(CLAIMS).analyze(PostContent.from_caption(URL, "A quiet morning"))

    assert signal.score == 0.0
    assert signal.confidence == 0.3
    assert signal.evidence == ["no match among 3 known claims"]


def test_fact_check_is_unavailable_without_claims_or_caption() -> None:
    assert ClaimMatcher([]).analyze(PostContent.from_caption(URL, "text")).status == "unavailable"
    no_caption = ClaimMatcher(CLAIMS).analyze(PostContent.from_caption(URL, "  "))
    assert no_caption.status == "unavailable"
    assert no_caption.detail == "the post has no caption to check"
