"""Claim matching: hits, near misses, windows, negated matches and the fact_check signal."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from trustcard.analysis.claims import MATCH_THRESHOLD, Claim, match_claims, stem, tokens
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


def test_inflection_and_reordering_match_fully() -> None:
    for caption in ("The vaccine contained a microchip", "Microchips are contained in vaccines"):
        [match] = match_claims(caption, CLAIMS)
        assert (match.claim, match.similarity) == (MICROCHIPS, 1.0)
    [match] = match_claims("microchips are contained in vaccines!", CLAIMS)
    assert match.matched_span == "microchips are contained in vaccines"


def test_one_inserted_word_matches_two_do_not() -> None:
    [match] = match_claims("vaccines secretly contain microchips", CLAIMS)
    assert match.similarity == 0.857  # 2 x 3 shared / (3 + 4 words)
    assert match_claims("vaccines secretly contain tiny microchips", CLAIMS) == []


def test_one_changed_word_is_judged_by_the_claims_length() -> None:
    # Three of four words (0.75) reach the threshold; two of three (0.67) do not.
    [match] = match_claims("5G towers spread the flu", CLAIMS)
    assert (match.claim, match.similarity) == (FIVE_G, 0.75)
    assert match_claims("Vaccines contain vitamins", CLAIMS) == []


def test_paraphrase_with_other_words_is_not_seen() -> None:
    # Honest limit of a lexical matcher: same meaning, other words.
    assert match_claims("They are putting tracking chips inside the covid jabs", CLAIMS) == []
    assert match_claims("NASA never went to the moon, it was all filmed on a set", CLAIMS) == []


def test_a_claim_is_found_in_any_window_of_a_long_caption_but_not_spread_across_it() -> None:
    filler = "Lovely weather at the beach today with the whole family and the dog. " * 30
    caption = f"{filler} Remember: vaccines contain microchips! {filler}"

    [match] = match_claims(caption, CLAIMS)

    assert (match.similarity, match.matched_span) == (1.0, "vaccines contain microchips")
    # The same words scattered over the caption are not one claim.
    scattered = f"vaccines {filler} contain {filler} microchips"
    assert match_claims(scattered, CLAIMS) == []


def test_matches_are_ordered_limited_and_thresholded() -> None:
    claims = [Claim(i, f"vaccines contain microchips number{i}", "false") for i in range(1, 9)]
    caption = "vaccines contain microchips number7"

    matches = match_claims(caption, claims, limit=3)

    assert [m.claim.id for m in matches] == [7, 1, 2]
    assert [m.similarity for m in matches] == [1.0, 0.75, 0.75]
    assert match_claims(caption, claims, threshold=0.8) == [matches[0]]


def test_of_equally_similar_windows_the_one_in_the_claims_word_order_is_quoted() -> None:
    flat = Claim(1, "The earth is flat", "false")

    [match] = match_claims("Flat earthers, the earth is not flat", [flat])

    assert (match.similarity, match.matched_span) == (0.8, "earth is not flat")


def test_a_repeated_word_counts_as_often_as_both_texts_hold_it() -> None:
    claim = Claim(1, "bananas bananas apples", "false")

    [match] = match_claims("bananas apples apples cherries", [claim], threshold=0.6)

    assert (match.similarity, match.matched_text) == (0.667, "banana appl appl")


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
        "matched_span": "5G towers spread the coronavirus",
        "negation_cue": None,
    }
    assert "claim #3 rated disputed (similarity 1.00)" in signal.evidence[0]
    assert signal.detail == "the caption repeats 1 known claim(s)"


@pytest.mark.parametrize(
    ("caption", "cue"),
    [
        ("It is false that vaccines contain microchips, stop sharing this", "It is false that"),
        ("Vaccines contain microchips? That's a myth.", "myth"),
        ("No, vaccines do not contain microchips", "No"),
    ],
)
def test_a_negated_claim_weighs_a_fifth_of_a_repeated_one(caption: str, cue: str) -> None:
    repeated = ClaimMatcher(CLAIMS).analyze(
        PostContent.from_caption(URL, "Vaccines contain microchips")
    )
    negated = ClaimMatcher(CLAIMS).analyze(PostContent.from_caption(URL, caption))

    assert repeated.score == 1.0
    [match] = negated.data["matches"]
    assert match["negation_cue"] == cue
    assert negated.score == pytest.approx(match["similarity"] * 0.2, abs=0.001)
    assert negated.score is not None
    assert negated.score < 0.5  # the accuracy bench's flag line
    assert f"negated (cue: {cue!r})" in negated.evidence[0]
    assert negated.detail == "the caption repeats 0 known claim(s) and negates 1"


def test_a_repeated_claim_outweighs_a_negated_one_in_the_same_caption() -> None:
    caption = "Vaccines contain microchips. And the moon landing faked in a studio? A myth."

    signal = ClaimMatcher(CLAIMS).analyze(PostContent.from_caption(URL, caption))

    cues = {m["claim_id"]: m["negation_cue"] for m in signal.data["matches"]}
    assert cues == {1: None, 2: "myth"}
    assert signal.score == 1.0
    assert signal.detail == "the caption repeats 1 known claim(s) and negates 1"


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


def test_stemming_in_many_threads_at_once_gives_each_word_its_own_stem() -> None:
    words = [
        f"{prefix}{suffix}"
        for prefix in ("contain", "vaccin", "land", "fak", "spread")
        for suffix in ("ing", "ed", "s", "ers", "ation", "ingly")
    ]
    expected = [stem(word) for word in words]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: mid-word, if shared
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: [stem(w) for w in words * 200], range(8)))
    finally:
        sys.setswitchinterval(switch)
    assert all(result == expected * 200 for result in results)
