"""Log formats and the tracing switch, without processes."""

from __future__ import annotations

import io
import json
import logging

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


def emit(fmt: str, message: str) -> str:
    stream = io.StringIO()
    handler = make_handler("json" if fmt == "json" else "text")
    handler.setStream(stream)  # type: ignore[attr-defined]
    logger = logging.getLogger(f"test.logs.{fmt}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message)
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
