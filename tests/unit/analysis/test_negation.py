"""Negation cues near a matched claim: which count, which are too far, which belong to the claim."""

from __future__ import annotations

import pytest

from trustcard.analysis.negation import (
    CUE_WORDS_AFTER,
    CUE_WORDS_BEFORE,
    NEGATED_WEIGHT,
    negation_cue,
    negation_weight,
)

SPAN = "vaccines contain microchips"


@pytest.mark.parametrize(
    ("caption", "cue"),
    [
        ("It is false that vaccines contain microchips", "It is false that"),
        ("It\u2019s not true that vaccines contain microchips", "It\u2019s not true that"),
        ("Not true that vaccines contain microchips", "Not true that"),
        ("Debunked: vaccines contain microchips", "Debunked"),
        ("MYTH: vaccines contain microchips", "MYTH"),
        ("Fact check: false. vaccines contain microchips", "Fact check: false"),
        ("The hoax that vaccines contain microchips is back", "hoax"),
        ("vaccines contain microchips? That's a myth.", "myth"),
        ("vaccines contain microchips - debunked years ago", "debunked"),
        ("Stop sharing this: vaccines contain microchips", "Stop sharing"),
        ("There is no evidence vaccines contain microchips", "no evidence"),
        ("Misinformation alert: vaccines contain microchips", "Misinformation"),
    ],
)
def test_debunking_cues_near_the_span_negate_it(caption: str, cue: str) -> None:
    assert negation_cue(caption, SPAN) == cue
    assert negation_weight(caption, SPAN) == NEGATED_WEIGHT == 0.2


@pytest.mark.parametrize(
    ("caption", "span", "cue"),
    [
        ("No, vaccines contain no microchips", "vaccines contain no microchips", "No"),
        (
            "5G towers do not spread the coronavirus",
            "5G towers do not spread the coronavirus",
            "not",
        ),
        ("Bleach doesn't cure covid", "Bleach doesn't cure covid", "doesn't"),
        ("The earth was never flat", "earth was never flat", "never"),
    ],
)
def test_negators_inside_or_just_before_the_span_negate_it(
    caption: str, span: str, cue: str
) -> None:
    assert negation_cue(caption, span) == cue


@pytest.mark.parametrize(
    "caption",
    [
        "vaccines contain microchips",
        "BREAKING: vaccines contain microchips, share before they delete it #wakeup",
        "They won't tell you, but vaccines contain microchips!!!",  # "won't" is 6 words before
        "Nobody talks about it: vaccines contain microchips",
    ],
)
def test_repeating_captions_keep_the_full_weight(caption: str) -> None:
    assert negation_cue(caption, SPAN) is None
    assert negation_weight(caption, SPAN) == 1.0


def test_a_cue_far_before_or_after_the_span_does_not_count() -> None:
    far = " ".join(["word"] * CUE_WORDS_BEFORE)
    assert negation_cue(f"Myth busting Monday! {far} vaccines contain microchips", SPAN) is None
    assert negation_cue(f"Myth! {far[5:]} vaccines contain microchips", SPAN) == "Myth"
    after = " ".join(["word"] * CUE_WORDS_AFTER)
    assert negation_cue(f"vaccines contain microchips {after} hoax", SPAN) is None
    assert negation_cue(f"vaccines contain microchips {after[5:]} hoax", SPAN) == "hoax"


def test_a_negator_counts_only_right_before_or_inside_the_span() -> None:
    assert negation_cue("I do not know why but vaccines contain microchips", SPAN) is None
    assert negation_cue("Do not forget: vaccines contain microchips", SPAN) is None
    assert negation_cue("No! vaccines contain microchips", SPAN) == "No"


def test_the_claims_own_words_are_no_cue() -> None:
    caption = "Masks do not work, wake up"
    assert negation_cue(caption, "Masks do not work") == "not"
    assert negation_cue(caption, "Masks do not work", claim="Masks do not work") is None
    assert (
        negation_cue("Masks do not work? Not true.", "Masks do not work", claim="Masks do not work")
        == "Not true"
    )


def test_one_plain_repetition_among_negated_ones_spreads_the_claim() -> None:
    far = "word " * CUE_WORDS_BEFORE
    assert (
        negation_cue(f"Myth: vaccines contain microchips. {far} vaccines contain microchips", SPAN)
        is None
    )
    assert negation_cue(f"Myth: vaccines contain microchips. {far} Myth", SPAN) == "Myth"


def test_without_a_span_the_whole_caption_is_searched() -> None:
    long = "Hoax of the week. " + "word " * 40 + "the rest"
    assert negation_cue(long) == "Hoax"
    assert negation_cue(long, None) == "Hoax"
    assert negation_cue(long, "not in the caption") == "Hoax"
    assert negation_weight("a quiet morning") == 1.0


def test_the_span_is_found_regardless_of_case() -> None:
    assert negation_cue("DEBUNKED: VACCINES CONTAIN MICROCHIPS", SPAN) == "DEBUNKED"
    far = "word " * 20
    assert negation_cue(f"DEBUNKED: {far} VACCINES CONTAIN MICROCHIPS", SPAN) is None
