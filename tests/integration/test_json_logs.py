"""LOG_FORMAT=json: every line the API and the worker print is one JSON object a collector parses.

Real processes (tests/stack.py) with tracing on, driven through requests, tasks, a failing task
and analyses, then stopped (shutdown lines count too). Every line of their stdout and stderr
must parse, carry the common fields, an ISO-8601 UTC millisecond timestamp and no ANSI colour.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.otlp_receiver import OtlpReceiver
from tests.stack import ServiceStack, poll_until, submit

pytestmark = pytest.mark.integration

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
COMMON_FIELDS = {
    "time",
    "level",
    "logger",
    "process",
    "message",
    "trace_id",
    "span_id",
    "request_id",
    "task_id",
    "task_name",
}
ACCESS_FIELDS = {"method", "route", "path", "status", "duration_ms", "client_addr", "request_id"}
TRACE_ID = re.compile(r"[0-9a-f]{32}")
SPAN_ID = re.compile(r"[0-9a-f]{16}")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Drive a JSON-logging stack, stop it, and hand over its parsed lines and the ids used."""
    receiver = OtlpReceiver().start()
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("json-logs")),
        env_overrides={
            "LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    try:
        stack.start()
        ids = _drive(stack)
        stack.stop()
        assert stack.api is not None
        assert stack.worker is not None
        yield {"api": _parse(stack.api.log()), "worker": _parse(stack.worker.log()), **ids}
    finally:
        stack.stop()
        receiver.stop()


def _drive(stack: ServiceStack) -> dict[str, Any]:
    with stack.client() as client:
        tagged = client.post(
            "/tasks/test/add", params={"x": 1, "y": 2}, headers={"X-Request-ID": "req-obs-1"}
        )
        assert tagged.status_code == 202, tagged.text
        # A header that would break a log line is replaced by a fresh id.
        untagged = client.get("/health/live", headers={"X-Request-ID": "two words"})
        assert client.get("/no/such/route").status_code == 404
        assert client.post("/tasks/test/add", params={"x": "a"}).status_code == 422
        failing = submit(client, "/tasks/test/fail")
        fetched = _analyse(client, {})  # fails: nothing listens at POST_FETCH_BASE_URL
        supplied = _analyse(client, {"content": {"caption": "A quiet supplied caption"}})
        add_id = tagged.json()["task_id"]
        poll_until(client, add_id, {"completed"})
        poll_until(client, failing, {"failed"})
        poll_until(client, fetched["task_id"], {"failed"})
        poll_until(client, supplied["task_id"], {"completed"})
    return {
        "add": add_id,
        "fail": failing,
        "fetched": fetched["task_id"],
        "supplied": supplied["task_id"],
        "tagged_header": tagged.headers.get("x-request-id"),
        "untagged_header": untagged.headers.get("x-request-id"),
    }


def _analyse(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    url = f"https://www.instagram.com/p/C{uuid.uuid4().hex[:10]}/"
    response = client.post("/analysis/posts", json={"url": url, **body})
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


def _parse(output: str) -> list[dict[str, Any]]:
    assert output.strip(), "the process printed nothing"
    records = []
    for number, line in enumerate(output.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def _with(records: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


@pytest.mark.parametrize("process", ["api", "worker"])
def test_every_line_is_json_with_the_common_fields(logs: dict[str, Any], process: str) -> None:
    for record in logs[process]:
        line = json.dumps(record)
        assert record.keys() >= COMMON_FIELDS, line
        assert TIME.fullmatch(record["time"]), line
        assert "color_message" not in record, line
        assert "\\u001b" not in line, line  # ANSI escapes, as JSON writes them
        if record["trace_id"]:
            assert TRACE_ID.fullmatch(record["trace_id"]), line
            assert SPAN_ID.fullmatch(record["span_id"]), line


def test_access_lines_are_fields_with_route_and_request_id(logs: dict[str, Any]) -> None:
    access = _with(logs["api"], logger="trustcard.access")
    assert access, "no access lines"
    for record in access:
        assert record.keys() >= ACCESS_FIELDS, record
        assert isinstance(record["status"], int), record
        assert isinstance(record["duration_ms"], float), record
        assert re.fullmatch(r"127\.0\.0\.1:\d+", record["client_addr"]), record
    (tagged,) = _with(access, request_id="req-obs-1")
    assert logs["tagged_header"] == "req-obs-1"  # honoured and echoed
    assert tagged["method"] == "POST"
    assert tagged["route"] == "/tasks/test/add"
    assert tagged["path"] == "/tasks/test/add"
    assert tagged["status"] == 202
    # Inside the request's server span.
    assert TRACE_ID.fullmatch(tagged["trace_id"]), tagged
    assert re.fullmatch(r"[0-9a-f]{32}", logs["untagged_header"]), logs["untagged_header"]
    assert _with(access, request_id=logs["untagged_header"], route="/health/live")
    assert not _with(logs["api"], logger="uvicorn.access"), "uvicorn's own access lines"
    (unmatched,) = _with(access, path="/no/such/route")
    assert (unmatched["route"], unmatched["status"]) == ("<unmatched>", 404)
    assert _with(access, route="/tasks/test/add", status=422)


def test_api_app_lines(logs: dict[str, Any]) -> None:
    started = [r for r in logs["api"] if r["message"].startswith("trustcard API ")]
    assert started, "no start-up line"
    assert started[0]["logger"] == "trustcard.api.main", started
    assert _with(logs["api"], logger="uvicorn.error", level="INFO"), "uvicorn's own lines"


def test_worker_task_lines_name_their_task(logs: dict[str, Any]) -> None:
    worker = logs["worker"]
    add = _with(worker, task_id=logs["add"])
    assert {r["task_name"] for r in add} == {"test.add"}
    messages = " | ".join(r["message"] for r in add)
    assert "received" in messages, messages
    assert "succeeded" in messages, messages

    (failed,) = _with(worker, task_id=logs["fail"], level="ERROR")
    assert failed["task_name"] == "test.fail"
    assert "deliberate failure" in failed["message"] + failed.get("exc_info", "")
    assert TRACE_ID.fullmatch(failed["trace_id"]), failed

    # Our own logger, inside the task (and its span).
    (extract,) = _with(worker, task_id=logs["fetched"], logger="trustcard.tasks.analysis_tasks")
    assert extract["task_name"] == "analysis.process_post"
    assert "failed at extract (connect_failed)" in extract["message"], extract
    assert TRACE_ID.fullmatch(extract["trace_id"]), extract
    assert SPAN_ID.fullmatch(extract["span_id"]), extract
    (done,) = _with(worker, task_id=logs["supplied"], logger="trustcard.tasks.analysis_tasks")
    assert done["level"] == "INFO", done
    assert " in " in done["message"], done


def test_celery_worker_lines_are_json(logs: dict[str, Any]) -> None:
    messages = [r["message"] for r in logs["worker"]]
    assert any(m.endswith(" ready.") for m in messages), messages[:20]
    assert "worker: Warm shutdown (MainProcess)" in messages, messages[-10:]
