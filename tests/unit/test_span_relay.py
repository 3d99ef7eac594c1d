"""Spans relayed from a pool child encode to the same OTLP bytes as the originals."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from trustcard.observability import span_relay
from trustcard.observability.span_relay import (
    RelaySpanExporter,
    messages,
    span_from_record,
    span_record,
)


class Collecting(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut_down = True


def finished_spans() -> list[ReadableSpan]:
    """Spans with what the worker's spans carry, and what they might (events, links, errors)."""
    collected = Collecting()
    provider = TracerProvider(
        resource=Resource({"service.name": "w", "service.instance.id": "i"}, "https://s/1"),
        span_limits=SpanLimits(max_span_attributes=3),
    )
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("trustcard", "1.0", "https://schema", {"scope.attr": 1})
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value")]),
    )
    parent = set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span(
        "run/test.add", context=parent, kind=SpanKind.CONSUMER, links=[Link(remote, {"k": "v"})]
    ) as run:
        run.set_attributes({"celery.task_name": "test.add", "n": 3, "f": 0.5, "b": True})
        run.set_attribute("seq", ("a", "b"))  # over the limit of 3: dropped, and counted
        run.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span("store_result", attributes={"celery.state": "SUCCESS"}):
            pass
        run.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return collected.spans


def test_relayed_spans_encode_to_the_same_bytes() -> None:
    spans = finished_spans()
    assert spans[-1].dropped_attributes > 0
    resources: dict[object, Resource] = {}
    rebuilt = [span_from_record(span_record(s), resources) for s in spans]
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()


def test_messages_are_cut_below_the_socket_record_size() -> None:
    spans = finished_spans() * 200
    cut = messages(spans)
    assert len(cut) > 1
    assert sum(count for _, count in cut) == len(spans)
    assert all(len(message) <= span_relay.MESSAGE_BYTES + 4096 for message, _ in cut)


def test_the_relay_process_exports_what_children_send_and_ends_with_them() -> None:
    """A real relay process; its exporter writes the span names it got to a pipe."""
    read_end, write_end = os.pipe()

    class ToPipe(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            os.write(write_end, "".join(f"{s.name}\n" for s in spans).encode())
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            os.write(write_end, b"shutdown\n")

    relay = span_relay.SpanRelay(ToPipe())
    relay.start()
    os.close(write_end)
    assert relay.sender is not None
    direct = Collecting()
    exporter = RelaySpanExporter(relay.sender, direct)
    spans = finished_spans()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    relay.stop(timeout=10)
    with os.fdopen(read_end) as pipe:
        lines = pipe.read().split()
    assert lines == [s.name for s in spans] + ["shutdown"]
    assert direct.spans == []


def test_a_child_exports_itself_when_the_relay_is_gone() -> None:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    receiver.close()
    direct = Collecting()
    spans = finished_spans()
    assert RelaySpanExporter(sender, direct).export(spans) is SpanExportResult.SUCCESS
    assert direct.spans == spans
    sender.close()
