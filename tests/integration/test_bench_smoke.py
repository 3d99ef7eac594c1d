"""`python -m bench --smoke` runs every group end to end and writes its three files.

Only the shape is checked (every group present, every figure positive and finite, files
written); the targets are the benchmark's own verdicts and are not asserted on a busy machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The smoke run took ~45 s on 2 cores shared with other tests with four drains; six since the
# task-events drain (each starts a worker), and 103 s was measured at a load average of 5.
SMOKE_TIMEOUT = 150
GROUP_PREFIXES = {
    "raw Redis": "raw.redis.",
    "raw Celery": "raw.celery.",
    "service": "svc.http.",
    "service drains": "svc.drain.",
    "service end-to-end": "svc.e2e.",
    "memory": "svc.api_rss.",
}
# Differences can be 0 or negative (RSS growth); every other figure is a positive measurement.
SIGNED = {
    "svc.api_rss.growth",
    "svc.worker_pss.growth",
    "svc.worker_parent_growth",
    "raw.celery.worker_parent_growth",
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    log = out / "bench.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # Output to a file, not a pipe: a process the run leaked could hold a pipe open forever.
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(SMOKE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"bench --smoke ran over {SMOKE_TIMEOUT} s:\n{log.read_text()[-4000:]}")
    assert code == 0, log.read_text()[-4000:]
    report: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return out, report


def test_smoke_writes_markdown_json_and_png(smoke_run: tuple[Path, dict[str, Any]]) -> None:
    out, report = smoke_run
    assert report["meta"]["mode"] == "smoke"
    assert not report["failures"]
    table = (out / "latest.md").read_text()
    assert "| group | figure | value | baseline | ratio |" in table
    assert "| target (issue 7) |" in table
    png = (out / "latest.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 20_000  # four panels drawn, not an empty canvas


def test_every_group_has_positive_finite_figures(smoke_run: tuple[Path, dict[str, Any]]) -> None:
    _, report = smoke_run
    figures = {figure["key"]: figure for figure in report["figures"]}
    for group, prefix in GROUP_PREFIXES.items():
        assert [key for key in figures if key.startswith(prefix)], f"no {group} figures"
    for key, figure in figures.items():
        value = figure["value"]
        assert isinstance(value, int | float), key
        assert math.isfinite(value), key
        if key not in SIGNED:
            assert value > 0, (key, value)
        assert figure["unit"], key
        if figure["baseline"] is not None:
            assert figure["baseline"] in figures, (key, figure["baseline"])
            # A growth of exactly 0 has no ratio; every other baseline divides.
            if figures[figure["baseline"]]["value"]:
                assert figure["ratio"] is not None, key
                assert math.isfinite(figure["ratio"]), key


def test_every_target_is_judged_from_the_run(smoke_run: tuple[Path, dict[str, Any]]) -> None:
    _, report = smoke_run
    assert report["targets"]
    for target in report["targets"]:
        # Judged (pass or miss), never left unmeasured; whether it passes is not asserted here.
        assert target["passed"] in (True, False), target
        assert math.isfinite(target["value"]), target
        assert math.isfinite(target["threshold"]), target
