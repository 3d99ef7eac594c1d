"""`python -m bench.accuracy --quick` runs end to end and prints its tables (not the figures);
the caption table takes one column per matcher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.accuracy import caption_cases, caption_table

from trustcard.analysis.claims import Claim

ROOT = Path(__file__).resolve().parents[3]


def test_quick_accuracy_run_prints_every_table() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.accuracy", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "ai_generated analyzer: metadata-2 (C2PA validated); 13 images" in out
    assert out.count("| class | labelled | called | correct | precision | recall |") == 2
    for row in ("| ai | 9 |", "| camera | 4 |", "| C2PA forged camera claim on AI | ai |"):
        assert row in out
    assert "fact_check, flags at score >= 0.5: 64 captions against 36 rated claims:" in out
    assert "| | lexical-2 (rapidfuzz, threshold 0.75, negation cues) |" in out
    assert "| labelled repeats | 32 |" in out  # fact_check: 32 captions repeat a claim
    for kind in ("exact", "paraphrase", "negated", "unrelated"):
        assert f"| {kind} | " in out


def test_the_caption_table_has_one_column_per_matcher() -> None:
    cases = caption_cases()[:8]  # two claims: 4 repeats, 4 not

    def everything(caption: str, claims: list[Claim]) -> float:
        return 1.0

    def nothing(caption: str, claims: list[Claim]) -> float:
        return 0.0

    lines = caption_table(cases, {"everything": everything, "nothing": nothing})

    assert "| | everything | nothing |" in lines
    assert "| flagged | 8 | 0 |" in lines
    assert "| precision | 0.50 | n/a |" in lines
    assert "| recall | 1.00 | 0.00 |" in lines
    assert "| exact | 2 / 2 | 0 / 2 |" in lines
    assert "| negated | 2 / 2 | 0 / 2 |" in lines
