"""schemathesis against the live API's own OpenAPI document: no 5xx, responses match the schema.

A dedicated stack without a worker: fuzzed submissions (sleeps up to 60 s) only queue, so they
cannot hold up the workers other tests use. Each operation gets a bounded number of examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# What generated-from-the-schema bodies never contain, but clients can send: JSON numbers
# beyond float range (parsed as inf), NaN, lone surrogates, huge integers, thousands of keys.
# Each once answered 500 or echoed megabytes back (issue 15).
HOSTILE_VALUES = st.sampled_from(
    [float("inf"), float("-inf"), float("nan"), "\ud800", "post\udfff", 2**80, -(2**70)]
)
HOSTILE_EXAMPLES = 25


def fuzz_hostile(operation: Any, base_url: str) -> int:
    """Generated bodies with one hostile value put in, or thousands of keys added: never 5xx."""
    calls = 0

    @given(case=operation.as_strategy(), data=st.data())
    @settings(
        max_examples=HOSTILE_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any, data: st.DataObject) -> None:
        nonlocal calls
        if not isinstance(case.body, dict):
            return
        body = dict(case.body)
        if data.draw(st.booleans(), label="many keys"):
            body.update({f"k{n}": n for n in range(data.draw(st.integers(1000, 20_000)))})
        else:
            field = data.draw(st.sampled_from([*body, "url", "force", "extra"]), label="field")
            body[field] = data.draw(HOSTILE_VALUES, label="value")
        # Sent as raw JSON text (clients' encoders refuse these): 1e999999, "\\ud800", NaN.
        raw = json.dumps(body, allow_nan=True).replace("Infinity", "1e999999")
        response = httpx.post(
            base_url + case.formatted_path,
            params=case.query,
            content=raw.encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            timeout=40,
        )
        calls += 1
        assert response.status_code < 500, (body if len(body) < 20 else len(body), response.text)
        assert len(response.content) < 20_000, "the error echoed the input back"

    check()
    return calls


def test_hostile_bodies_never_answer_5xx(fuzzed_stack: ServiceStack) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_stack.base_url}/openapi.json")
    figures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.method.upper() in ("POST", "PUT", "PATCH") and operation.body:
            calls = fuzz_hostile(operation, fuzzed_stack.base_url)
            figures.append(f"{operation.label}: {calls} hostile requests")
    print("\n".join(figures))
    assert any(": 0 " not in line for line in figures), figures
