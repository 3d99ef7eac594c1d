"""values.yaml and values.schema.json agree; the schema rejects bad values readably."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.helm import CHART, RenderError, render_chart

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())


def test_values_yaml_validates_against_the_schema() -> None:
    jsonschema.validate(VALUES, SCHEMA)


def _walk(values: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Keys of values.yaml the schema does not describe (with a description and a type)."""
    problems = []
    if not schema.get("description"):
        problems.append(f"{path or '<root>'}: no description")
    if "type" not in schema:
        problems.append(f"{path or '<root>'}: no type")
    if isinstance(values, dict) and values:
        if (
            schema.get("additionalProperties") is not False
            and path
            not in {
                "podSecurityContext",
                "containerSecurityContext",
                "containerSecurityContext.capabilities",
                "podSecurityContext.seccompProfile",
                # Parent charts pass their own globals: the subchart must accept any of them.
                "global",
            }
            and not path.endswith((".requests", ".limits"))
        ):
            problems.append(f"{path}: additionalProperties is not false")
        for key, value in values.items():
            child = schema.get("properties", {}).get(key)
            if child is None:
                problems.append(f"{path}.{key}: missing from the schema")
            else:
                problems += _walk(value, child, f"{path}.{key}".lstrip("."))
    return problems


def test_every_key_is_in_the_schema_with_description_and_type() -> None:
    assert _walk(VALUES, SCHEMA, "") == []


def test_every_values_key_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")) or ":" not in stripped:
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#") and not previous.startswith("- "):
            uncommented.append(f"line {number + 1}: {stripped}")
    assert uncommented == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"worker": {"prefetchMultiplier": 0}},
            "at '/worker/prefetchMultiplier': minimum: got 0, want 1",
        ),
        (
            {"worker": {"maxTasksPerChild": "fifty"}},
            "at '/worker/maxTasksPerChild': got string, want integer",
        ),
        ({"worker": {"unknownKey": 1}}, "additional properties 'unknownKey' not allowed"),
        ({"worker": {"autoscaling": {"mode": "vpa"}}}, "at '/worker/autoscaling/mode'"),
        ({"config": {"logLevel": "LOUD"}}, "at '/config/logLevel'"),
        (
            {"worker": {"terminationGracePeriodSeconds": 100}},
            "worker.terminationGracePeriodSeconds (100) must exceed config.taskTimeLimit (300)",
        ),
        (
            {"config": {"taskSoftTimeLimit": 300}},
            "config.taskSoftTimeLimit (300) must be lower than",
        ),
        (
            {"config": {"brokerVisibilityTimeout": 200}},
            "config.brokerVisibilityTimeout (200) must exceed",
        ),
        ({"redis": {"enabled": False}}, "redis.enabled=false needs externalRedis.existingSecret"),
        ({"redis": {"tls": {"enabled": True}}}, "redis.tls.enabled needs redis.tls.existingSecret"),
        (
            {"externalRedis": {"tls": {"certKey": "tls.crt"}}},
            "externalRedis.tls.certKey needs externalRedis.tls.keyKey",
        ),
    ],
)
def test_bad_values_are_refused_with_a_readable_message(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(RenderError) as refused:
        render_chart(values)
    assert message in str(refused.value)


def test_chart_readme_values_table_is_current() -> None:
    import importlib.util

    from tests.chart.helm import ROOT

    spec = importlib.util.spec_from_file_location(
        "table", ROOT / "scripts" / "chart_values_table.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (CHART / "README.md").read_text()
    assert module.with_table(readme) == readme, "run scripts/chart_values_table.py --write"
