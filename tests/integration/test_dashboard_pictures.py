"""`python -m bench.dashboard --check`: every shipped panel's PromQL returns data from a live stack.

The script starts Redis, worker, API, exporter and Prometheus, runs its workload and draws each
dashboard row; a panel whose query returns nothing makes it exit 1, and so fails this test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chart.helm import find_tool
from tests.chart.metric_names import load_dashboard

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_check_mode_draws_every_row_and_finds_no_empty_panel(tmp_path: Path) -> None:
    if find_tool("prometheus") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed: scripts/install-tools must provide it")
        pytest.skip("prometheus is not installed (run scripts/install-tools)")
    out = tmp_path / "images"
    result = subprocess.run(
        [sys.executable, "-m", "bench.dashboard", "--check", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [p["title"] for p in load_dashboard()["panels"] if p["type"] == "row"]
    drawn = sorted(path.name for path in out.glob("*.png"))
    assert len(drawn) == len(rows), drawn
    assert all(path.stat().st_size > 10_000 for path in out.glob("*.png"))
    assert "every panel returned data" in result.stdout
