"""Render the chart with the real `helm` binary and parse what it prints (Airflow-chart style)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trustcard"
TOOLS_BIN = ROOT / ".tools" / "bin"


def find_tool(name: str) -> str | None:
    """A tool from the project's .tools/bin (installed by scripts/install-tools) or PATH."""
    local = TOOLS_BIN / name
    if local.exists():
        return str(local)
    return shutil.which(name)


class RenderError(Exception):
    """helm refused the values; the message is helm's."""


def _helm(args: list[str], values: dict[str, Any] | None) -> subprocess.CompletedProcess[str]:
    helm = find_tool("helm")
    assert helm, "helm is not installed: run scripts/install-tools"
    values_file = ROOT / ".tools" / f"values-{os.getpid()}.yaml"
    values_file.parent.mkdir(exist_ok=True)
    values_file.write_text(yaml.safe_dump(values or {}))
    try:
        return subprocess.run(
            [helm, *args, "-f", str(values_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        values_file.unlink(missing_ok=True)


def lint_chart(values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """`helm lint --strict` with values."""
    return _helm(["lint", "--strict", str(CHART)], values)


def render_chart(
    values: dict[str, Any] | None = None,
    show_only: list[str] | None = None,
    release: str = "release",
    namespace: str = "trustcard",
) -> list[dict[str, Any]]:
    """`helm template` with values (as a YAML file), returning the parsed objects."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for template in show_only or []:
        args += ["--show-only", template]
    result = _helm(args, values)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_notes(values: dict[str, Any] | None = None, release: str = "release") -> str:
    """NOTES.txt as `helm install` prints it (client-side dry run: no cluster needed)."""
    args = ["install", release, str(CHART), "--namespace", "trustcard", "--dry-run=client"]
    result = _helm(args, values)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout.partition("\nNOTES:\n")[2]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [
        obj for obj in by_kind(objects, kind) if obj["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, got {len(matches)}"
    return matches[0]


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    for candidate in obj["spec"]["template"]["spec"]["containers"]:
        if candidate["name"] == name:
            result: dict[str, Any] = candidate
            return result
    raise AssertionError(f"no container {name}")


def env_map(spec: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or valueFrom) of a container's env list."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in spec.get("env", [])}
