"""`python -m bench.accuracy --quick` runs end to end and prints its tables (not the figures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert "| all | 8 |" in out  # fact_check: 8 captions repeat a claim
    for kind in ("exact", "paraphrase", "negated", "unrelated"):
        assert f"| {kind} | " in out
