"""`python -m bench.claims_speed` builds its three cases and prints a row each (not the times)."""

from __future__ import annotations

from bench.claims_speed import SCENARIOS, report, scenario


def test_every_scenario_is_measured() -> None:
    lines = report(300)

    assert lines[1] == "| case | first run (s) | warm (s) | matches |"
    assert [line.split(" | ")[0] for line in lines[3:]] == [f"| {name}" for name in SCENARIOS]


def test_the_scenarios_are_what_they_claim() -> None:
    typical_claims, typical_caption = scenario("typical", 300)
    worst_claims, worst_caption = scenario("worst", 300)
    quoted_claims, quoted_caption = scenario("quoted", 300)

    assert len(typical_claims) == len(worst_claims) == len(quoted_claims) == 300
    assert len(typical_caption.split()) == len(worst_caption.split()) == 350
    # worst: every claim word is in the caption; quoted: every claim is a slice of it.
    assert all(set(c.text.split()) <= set(worst_caption.split()) for c in worst_claims)
    assert all(c.text in quoted_caption for c in quoted_claims)
    assert scenario("worst", 300) == (worst_claims, worst_caption)  # seeded: the same each run
