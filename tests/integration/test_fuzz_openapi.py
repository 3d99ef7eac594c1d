"""schemathesis against the live API's own OpenAPI document: no 5xx, responses match the schema.

A dedicated stack without a worker: fuzzed submissions (sleeps up to 60 s) only queue, so they
cannot hold up the workers other tests use. Each operation gets a bounded number of examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.stack import ServiceStack

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 30
API_KEY = "fuzzing-key-0123456789"


@pytest.fixture(scope="module")
def fuzzed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("fuzz")),
        with_worker=False,
        # As deployed by the chart: keys on (schemathesis also checks requests without one).
        env_overrides={"API_KEYS": API_KEY},
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


def fuzz(operation: Any) -> int:
    """Run EXAMPLES_PER_OPERATION generated requests; raises on the first failed check."""
    calls = 0

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        nonlocal calls
        response = case.call(timeout=40, headers={"Authorization": f"Bearer {API_KEY}"})
        calls += 1
        case.validate_response(response)

    check()
    return calls


def test_every_operation_conforms(fuzzed_stack: ServiceStack) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_stack.base_url}/openapi.json")
    failures: list[str] = []
    figures: list[str] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"unusable operation in the schema: {result.err()}")
            continue
        operation = result.ok()
        try:
            figures.append(f"{operation.label}: {fuzz(operation)} requests")
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    print("\n".join(figures))
    assert len(figures) + len(failures) >= 10, "fewer operations than the API has"
    assert not failures, "\n\n".join(failures)
