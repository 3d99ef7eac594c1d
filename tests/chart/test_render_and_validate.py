"""Every rendered object of every variant validates strictly against Kubernetes and CRD schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.chart.helm import lint_chart, render_chart
from tests.chart.variants import VARIANTS

KUBERNETES_VERSIONS = ["1.30", "1.35"]
CRD_SCHEMAS = Path(__file__).parent / "crd-schemas"


def _crd_schema(obj: dict[str, Any]) -> dict[str, Any] | None:
    group_version = obj["apiVersion"].replace("/", "-")
    path = CRD_SCHEMAS / f"{obj['kind'].lower()}-{group_version}.json"
    if not path.exists():
        return None
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def _is_builtin(obj: dict[str, Any]) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_validates(variant: str) -> None:
    objects = render_chart(VARIANTS[variant])
    assert objects
    for obj in objects:
        where = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
        if _is_builtin(obj):
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    problem = f"{exc.message} at {list(exc.path)}"
                    pytest.fail(f"{where} invalid for Kubernetes {version}: {problem}")
        else:
            schema = _crd_schema(obj)
            assert schema is not None, f"{where}: no CRD schema in tests/chart/crd-schemas"
            jsonschema.validate(obj, schema)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict(variant: str) -> None:
    result = lint_chart(VARIANTS[variant])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
