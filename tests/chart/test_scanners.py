"""Policy scan (checkov) of every rendered variant and Dockerfile lint (hadolint): zero findings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import CHART, ROOT, find_tool, render_chart
from tests.chart.variants import VARIANTS

NETPOL_OFF_CONFIG = CHART / "checkov-netpol-off.yaml"


def _netpol_on(variant: str) -> bool:
    return bool(VARIANTS[variant].get("networkPolicy", {}).get("enabled"))


def _checkov(manifest: Path, config: Path | None) -> dict[str, object]:
    checkov = find_tool("checkov")
    assert checkov, "checkov is not installed: run scripts/install-tools"
    command = [checkov, "-f", str(manifest), "--framework", "kubernetes", "--skip-download"]
    command += ["--quiet", "-o", "json"]
    if config is not None:
        command += ["--config-file", str(config)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("netpol", [False, True], ids=["networkpolicy-off", "networkpolicy-on"])
def test_checkov_finds_nothing(netpol: bool, tmp_path: Path) -> None:
    variants = [name for name in sorted(VARIANTS) if _netpol_on(name) == netpol]
    documents = []
    for name in variants:
        # One namespace per variant keeps checkov's resource ids distinct in one scan.
        documents += render_chart(VARIANTS[name], namespace=f"v-{name}")
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    report = _checkov(manifest, None if netpol else NETPOL_OFF_CONFIG)
    summary = report["summary"]
    assert isinstance(summary, dict)
    results = report["results"]
    assert isinstance(results, dict)
    failed = [f"{item['check_id']} {item['resource']}" for item in results["failed_checks"]]
    print(f"checkov {variants}: {summary}")
    assert failed == []
    assert summary["passed"] > 0
    assert summary["resource_count"] >= 10 * len(variants)


def test_hadolint_is_clean() -> None:
    hadolint = find_tool("hadolint")
    assert hadolint, "hadolint is not installed: run scripts/install-tools"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
