"""Worker pool children hand each ended span to the worker's main process, which exports them.

A prefork child lives max-tasks-per-child tasks (50 by default). Exporting from each child
costs a Collector connection (and TLS handshake) per child and the exporter's cold path each
time: on the benchmark machine ~10 ms of CPU per child (OTLP encoding, requests, copy-on-write
page faults), about 0.2 ms per task. The main process lives as long as the worker, so its
exporter stays warm and keeps one connection.

The main process makes a datagram socket pair before the pool forks; every child inherits
the sending end and sends each ended span, as plain values, in one datagram. Nothing waits
in a child: a child recycled or killed after a task has already handed over that task's
spans, and a child never blocks on the main process (a full socket drops the span, counted
and logged). The main process's relay thread rebuilds each span, batches them as the SDK's
BatchSpanProcessor would (OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_EXPORT_BATCH_SIZE) and hands
the batches to the OTLP exporter. Spans carry the main process's resource: one
service.instance.id per worker, not one per short-lived child.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

log = logging.getLogger(__name__)

# Socket buffer for spans in flight: ~3,000 spans of a no-op task while the relay thread waits
# for the GIL or an export. The kernel caps it at net.core.wmem_max.
SOCKET_BUFFER_BYTES = 4 << 20
# Largest span accepted (a span with a long exception stack trace is a few KiB).
MAX_SPAN_BYTES = 256 << 10
DEFAULT_SCHEDULE_DELAY_MS = 5000
DEFAULT_MAX_EXPORT_BATCH = 512

WireContext = tuple[int, int, bool, int, str]


def _context_to_wire(context: SpanContext) -> WireContext:
    trace_state = context.trace_state.to_header() if context.trace_state else ""
    return (
        context.trace_id,
        context.span_id,
        context.is_remote,
        int(context.trace_flags),
        trace_state,
    )


def _context_from_wire(wire: WireContext) -> SpanContext:
    trace_id, span_id, is_remote, flags, trace_state = wire
    return SpanContext(
        trace_id,
        span_id,
        is_remote,
        TraceFlags(flags),
        TraceState.from_header([trace_state]) if trace_state else None,
    )


def span_to_wire(span: ReadableSpan) -> tuple[Any, ...]:
    """The span as plain, picklable values (SDK spans hold locks and are not picklable)."""
    assert span.context is not None
    scope = span.instrumentation_scope
    return (
        span.name,
        _context_to_wire(span.context),
        _context_to_wire(span.parent) if span.parent else None,
        dict(span.attributes or {}),
        [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
        [(_context_to_wire(link.context), dict(link.attributes or {})) for link in span.links],
        span.kind.value,
        span.status.status_code.value,
        span.status.description,
        span.start_time,
        span.end_time,
        (scope.name, scope.version, scope.schema_url, dict(scope.attributes or {}))
        if scope
        else None,
    )


def span_from_wire(
    wire: Sequence[Any], resource: Resource, scopes: dict[Any, InstrumentationScope]
) -> ReadableSpan:
    """A ReadableSpan equal, for an exporter, to the one span_to_wire() was given."""
    (name, context, parent, attributes, events, links, kind, code, description, start, end) = wire[
        :11
    ]
    scope_wire = wire[11]
    scope = None
    if scope_wire is not None:
        scope_name, version, schema_url, scope_attributes = scope_wire
        key = (scope_name, version, schema_url, tuple(sorted(scope_attributes.items())))
        scope = scopes.get(key)
        if scope is None:
            scope = scopes[key] = InstrumentationScope(*scope_wire)
    return ReadableSpan(
        name=name,
        context=_context_from_wire(context),
        parent=_context_from_wire(parent) if parent else None,
        resource=resource,
        attributes=attributes,
        events=[Event(event_name, attrs, at) for event_name, attrs, at in events],
        links=[Link(_context_from_wire(ctx), attrs) for ctx, attrs in links],
        kind=SpanKind(kind),
        status=Status(StatusCode(code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def span_to_bytes(span: ReadableSpan) -> bytes:
    """One datagram: the span's plain values, pickled."""
    return pickle.dumps(span_to_wire(span), pickle.HIGHEST_PROTOCOL)


def span_from_bytes(
    data: bytes | memoryview, resource: Resource, scopes: dict[Any, InstrumentationScope]
) -> ReadableSpan:
    # Only processes forked from the relay's own hold the unnamed socket's sending end.
    return span_from_wire(pickle.loads(data), resource, scopes)  # noqa: S301


class SpanForwarder(SpanProcessor):
    """A pool child's span processor: each ended span goes to the main process at once."""

    def __init__(self, sender: socket.socket) -> None:
        self._sender = sender
        self.dropped = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do before a span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context or not span.context.trace_flags.sampled:
            return
        try:
            data = span_to_bytes(span)
            if len(data) > MAX_SPAN_BYTES:
                raise ValueError(f"{len(data)} bytes, over {MAX_SPAN_BYTES}")
            # MSG_DONTWAIT: a task never waits for the main process's relay thread.
            self._sender.send(data, socket.MSG_DONTWAIT)
        except (OSError, ValueError, pickle.PicklingError, TypeError) as error:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "span %r not handed to the main process (%d so far): %s",
                    span.name,
                    self.dropped,
                    error,
                )

    def shutdown(self) -> None:
        """Nothing is buffered here."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        log.warning("%s=%r is not an integer; using %d", name, raw, default)
        return default
    return value if value > 0 else default


class SpanRelay:
    """Main-process side: receives the children's spans and exports them in batches."""

    def __init__(self, exporter: SpanExporter, resource: Resource) -> None:
        self._exporter = exporter
        self._resource = resource
        self._scopes: dict[Any, InstrumentationScope] = {}
        self._receiver, self.sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for end in (self._receiver, self.sender):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        self._delay = _env_int("OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MS) / 1000
        self._batch_size = _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH)
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self.received = 0
        self.undecodable = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="span-relay", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def forwarder(self) -> SpanForwarder:
        """In a pool child: the processor sending to this relay (the receiving end is closed)."""
        if os.getpid() != self._pid:
            self._receiver.close()
        return SpanForwarder(self.sender)

    def stop(self, timeout: float = 10.0) -> None:
        """Export what was received and stop; the pool's children must have exited."""
        if self._thread is None or os.getpid() != self._pid:
            return
        # An empty datagram is the stop mark: it queues behind every span already sent.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sender.send(b"", socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        self._thread.join(timeout)
        self._thread = None
        self._exporter.shutdown()

    def _run(self) -> None:
        buffer = bytearray(MAX_SPAN_BYTES)
        view = memoryview(buffer)
        pending: list[ReadableSpan] = []
        export_at = 0.0
        # Wait with poll() on the blocking socket: a socket timeout of 0 (a batch already due)
        # would make recv raise EAGAIN; poll() has no FD_SETSIZE limit, unlike select().
        poller = select.poll()
        poller.register(self._receiver, select.POLLIN)
        while True:
            # Until a datagram comes, or the pending batch is due.
            timeout_ms = max(0.0, export_at - time.monotonic()) * 1000 if pending else None
            size = -1
            try:
                if poller.poll(timeout_ms):
                    size = self._receiver.recv_into(buffer)
            except OSError as error:  # not expected on a socket pair; say so, export, end
                log.error("span relay stopped receiving: %s", error)
                break
            if size == 0:
                break
            if size > 0:
                span = self._decode(view[:size])
                if span is not None:
                    if not pending:
                        export_at = time.monotonic() + self._delay
                    pending.append(span)
            if pending and (len(pending) >= self._batch_size or time.monotonic() >= export_at):
                self._export(pending)
                pending = []
        self._export(pending)

    def _decode(self, data: memoryview) -> ReadableSpan | None:
        try:
            span = span_from_bytes(data, self._resource, self._scopes)
        except Exception as error:  # a bad datagram must not end the relay
            self.undecodable += 1
            if self.undecodable == 1:
                log.warning("undecodable span from a pool child: %r", error)
            return None
        self.received += 1
        return span

    def _export(self, spans: list[ReadableSpan]) -> None:
        if not spans:
            return
        try:
            self._exporter.export(spans)
        except Exception:  # the exporter logs its own failures; this keeps the relay alive
            log.exception("exporting %d spans failed", len(spans))
