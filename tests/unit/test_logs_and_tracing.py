"""Log formats and the tracing switch, without processes."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from trustcard.observability.logs import make_handler
from trustcard.observability.tracing import tracing_configured


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_with_an_endpoint(environ: dict[str, str], on: bool) -> None:
    assert tracing_configured(environ) is on


def emit(fmt: str, message: str, **extra: Any) -> str:
    stream = io.StringIO()
    handler = make_handler("json" if fmt == "json" else "text")
    handler.setStream(stream)  # type: ignore[attr-defined]
    logger = logging.getLogger(f"test.logs.{fmt}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_the_current_trace() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = emit("json", "hello")
        context = span.get_span_context()
    record = json.loads(line)
    assert record["message"] == "hello"
    assert record["level"] == "WARNING"
    assert record["trace_id"] == f"{context.trace_id:032x}"
    assert record["span_id"] == f"{context.span_id:016x}"
    assert record["task_id"] == ""


def test_text_lines_outside_a_span_have_no_ids() -> None:
    line = emit("text", "plain")
    assert line.rstrip().endswith("] plain")
    assert "WARNING/" in line


def test_json_time_is_iso_utc_with_milliseconds() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    record = json.loads(emit("json", "when"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record
    logged = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert 0 <= (logged - before).total_seconds() < 5  # UTC, not local time


def test_uvicorn_colour_field_and_text_prefix_are_not_json_fields() -> None:
    record = json.loads(emit("json", "Started", color_message="\x1b[1mStarted\x1b[0m"))
    assert record["message"] == "Started"
    assert "color_message" not in record
    assert "task_prefix" not in record


def test_celery_lines_about_a_task_name_it() -> None:
    """Celery's `received` line is logged in the main process, outside the task."""
    data = {"id": "abc-123", "name": "test.add", "args": "(1, 2)"}
    record = json.loads(emit("json", "Task test.add[abc-123] received", data=data))
    assert (record["task_id"], record["task_name"]) == ("abc-123", "test.add")
    assert "data" not in record
