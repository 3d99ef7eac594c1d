"""Spans of forked children, exported by the process that forked them (span_relay)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from trustcard.observability import span_relay
from trustcard.observability.span_relay import SpanRelay, span_from_bytes, span_to_bytes

MAIN_RESOURCE = Resource({"service.name": "trustcard-worker", "service.instance.id": "main"})


class BatchSizes(InMemorySpanExporter):
    """The SDK's in-memory exporter, also keeping the size of each batch it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def export(self, spans: object) -> SpanExportResult:
        assert isinstance(spans, list)
        self.batches.append(len(spans))
        return super().export(spans)


@pytest.fixture
def exporter() -> BatchSizes:
    return BatchSizes()


@pytest.fixture
def relay(exporter: BatchSizes) -> Iterator[SpanRelay]:
    relay = SpanRelay(exporter, MAIN_RESOURCE)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def make_spans(provider: TracerProvider) -> None:
    """What a task run makes: a consumer span with events and a child span, one an error."""
    tracer = provider.get_tracer("opentelemetry.instrumentation.celery", "0.66b2")
    linked = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span(
        "run/test.add",
        kind=SpanKind.CONSUMER,
        attributes={"celery.task_name": "test.add", "retries": 0, "tags": ("a", "b")},
        links=[Link(linked, {"why": "poll"})],
    ) as run:
        run.add_event("result stored", {"celery.state": "STARTED"})
        with tracer.start_as_current_span("stage fact_check") as stage:
            stage.set_status(Status(StatusCode.ERROR, "no claims table"))
        run.add_event("result stored", {"celery.state": "SUCCESS"})


def in_forked_child(work: Callable[[], None]) -> int:
    """Run work() in a forked child that exits without any clean-up; returns its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's outcome is its exit code
        code = 0
        try:
            work()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def child_with_forwarder(relay: SpanRelay) -> Callable[[], None]:
    def work() -> None:
        provider = TracerProvider(resource=Resource({"service.instance.id": "child"}))
        provider.add_span_processor(relay.forwarder())
        make_spans(provider)

    return work


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_span_survives_the_trip_unchanged_for_the_exporter() -> None:
    provider = TracerProvider(resource=MAIN_RESOURCE)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    make_spans(provider)
    original = list(memory.get_finished_spans())
    state = TraceState([("vendor", "value")])
    traced = original[0]
    assert traced.context is not None
    with_state = ReadableSpan(
        name=traced.name,
        context=SpanContext(
            traced.context.trace_id, traced.context.span_id, False, TraceFlags(1), state
        ),
        resource=MAIN_RESOURCE,
        start_time=traced.start_time,
        end_time=traced.end_time,
        instrumentation_scope=traced.instrumentation_scope,
    )
    spans = [*original, with_state]
    scopes: dict[Any, InstrumentationScope] = {}
    rebuilt = [span_from_bytes(span_to_bytes(span), MAIN_RESOURCE, scopes) for span in spans]
    # Byte-identical OTLP: names, ids, parents, kinds, attributes, events, links, status,
    # times, trace state and instrumentation scope all made the trip.
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()
    assert rebuilt[2].context is not None
    assert rebuilt[2].context.trace_state.get("vendor") == "value"
    provider.shutdown()


def test_spans_of_a_forked_child_are_exported_by_the_parent_with_its_resource(
    relay: SpanRelay, exporter: BatchSizes
) -> None:
    # The child exits at once, without shutting anything down: its spans were sent as they ended.
    assert in_forked_child(child_with_forwarder(relay)) == 0
    assert in_forked_child(child_with_forwarder(relay)) == 0
    relay.stop()
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == ["run/test.add"] * 2 + ["stage fact_check"] * 2
    assert {s.resource.attributes["service.instance.id"] for s in spans} == {"main"}
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    stages = [s for s in spans if s.name == "stage fact_check"]
    for stage in stages:
        assert stage.parent is not None
        assert by_id[stage.parent.span_id].name == "run/test.add"
        assert stage.status.status_code is StatusCode.ERROR
    assert relay.received == 4


def test_batches_follow_the_sdk_batch_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    exporter = BatchSizes()
    relay = SpanRelay(exporter, MAIN_RESOURCE)
    relay.start()
    try:
        for _ in range(3):
            assert in_forked_child(child_with_forwarder(relay)) == 0
        # Six spans: exported within the schedule delay, in batches of at most three,
        # while the relay is still running.
        wait_for(lambda: len(exporter.get_finished_spans()) == 6)
        assert max(exporter.batches) <= 3
        assert relay.running
    finally:
        relay.stop()


class LaggingClock:
    """time for the relay, each reading 0.75 s after the last: as if the relay thread lost the
    CPU (or the GIL, to a main process busy forking) between two steps of its loop."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleep = time.sleep

    def monotonic(self) -> float:
        self.now += 0.75
        return self.now


def test_a_batch_falling_due_while_the_relay_waits_is_exported(
    monkeypatch: pytest.MonkeyPatch, exporter: BatchSizes
) -> None:
    """Found by CI: a batch already due when the relay next waited made that wait a socket
    timeout of 0, whose EAGAIN ended the relay (and every later span was lost)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1000")
    monkeypatch.setattr(span_relay, "time", LaggingClock())
    relay = SpanRelay(exporter, MAIN_RESOURCE)
    relay.start()

    def one_span() -> None:  # one span per child: the relay waits on an empty socket after it
        provider = TracerProvider()
        provider.add_span_processor(relay.forwarder())
        provider.get_tracer("test").start_span("run/test.add").end()

    try:
        for _ in range(3):
            assert in_forked_child(one_span) == 0
        wait_for(lambda: len(exporter.get_finished_spans()) == 3)
        assert relay.running
    finally:
        relay.stop()


def test_a_bad_datagram_is_counted_and_the_relay_goes_on(
    relay: SpanRelay, exporter: BatchSizes
) -> None:
    relay.sender.send(b"not a pickled span")
    assert in_forked_child(child_with_forwarder(relay)) == 0
    relay.stop()
    assert relay.undecodable == 1
    assert len(exporter.get_finished_spans()) == 2


def test_a_child_never_waits_when_the_parent_reads_nothing(exporter: BatchSizes) -> None:
    relay = SpanRelay(exporter, MAIN_RESOURCE)  # not started: nobody reads
    forwarder = relay.forwarder()
    provider = TracerProvider(resource=MAIN_RESOURCE)
    provider.add_span_processor(forwarder)
    started = time.monotonic()
    # More spans than the socket buffer (at most 2 x 4 MiB) holds: those that do not fit
    # are dropped and counted, and no send waits.
    for _ in range(20_000):
        make_spans(provider)
        if forwarder.dropped:
            break
    assert forwarder.dropped > 0
    assert time.monotonic() - started < 30
    provider.shutdown()
