"""Pool children hand their finished spans to one long-lived exporting process, the relay.

A pool child lives 50 tasks, so it exported its spans once, at exit, through its first HTTP
request: ~9 ms of CPU per child (0.18 ms per task), most of it copy-on-write page faults on
the code and objects a process touches the first time it encodes protobuf and speaks HTTP,
and all of it between two children, when only one is working. The relay is forked once
from the worker's main process before the pool: it keeps one warm connection and encodes
with warm pages, while a child only flattens its spans into tuples (marshal) and sends them
over a local socket, without waiting.

Whenever the relay cannot take a batch at once (not running, gone, its queue full while
the collector is slow), the child exports that batch itself, as it did before the relay.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

log = logging.getLogger(__name__)

# One socket message carries at most this much (an AF_UNIX record must fit the send buffer).
MESSAGE_BYTES = 60_000
RECEIVE_BYTES = 1 << 20
# The relay exports what it has received after at most this many spans, like the SDK's batch.
RELAY_BATCH_SPANS = 512
# The relay checks this often that the worker's main process is still there.
PARENT_CHECK_SECONDS = 1.0

_Record = tuple[Any, ...]


def _context_record(context: SpanContext | None) -> _Record | None:
    if context is None:
        return None
    return (
        context.trace_id,
        context.span_id,
        context.is_remote,
        int(context.trace_flags),
        list(context.trace_state.items()),
    )


def _context(record: _Record | None) -> SpanContext | None:
    if record is None:
        return None
    trace_id, span_id, is_remote, flags, state = record
    return SpanContext(trace_id, span_id, is_remote, TraceFlags(flags), TraceState(state))


def span_record(span: ReadableSpan) -> _Record:
    """Everything the OTLP encoder reads from a span, as marshal-able values."""
    scope = span.instrumentation_scope
    return (
        span.name,
        _context_record(span.context),
        _context_record(span.parent),
        dict(span.resource.attributes),
        span.resource.schema_url,
        dict(span.attributes or {}),
        [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
        [(_context_record(k.context), dict(k.attributes or {})) for k in span.links],
        span.kind.value,
        span.status.status_code.value,
        span.status.description,
        span.start_time,
        span.end_time,
        None if scope is None else (scope.name, scope.version, scope.schema_url),
        None if scope is None else dict(scope.attributes or {}),
        (span.dropped_attributes, span.dropped_events, span.dropped_links),
    )


class RelayedSpan(ReadableSpan):
    """A span rebuilt from its record; carries the sender's dropped counts."""

    def __init__(self, dropped: tuple[int, int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


def span_from_record(record: _Record, resources: dict[Any, Resource]) -> ReadableSpan:
    """The span again; `resources` keeps one Resource per distinct resource (per child)."""
    (
        name,
        context,
        parent,
        resource_attributes,
        resource_schema,
        attributes,
        events,
        links,
        kind,
        status_code,
        status_description,
        start_time,
        end_time,
        scope,
        scope_attributes,
        dropped,
    ) = record
    key = (tuple(sorted(resource_attributes.items())), resource_schema)
    resource = resources.get(key)
    if resource is None:
        resource = resources[key] = Resource(resource_attributes, resource_schema)
    code = StatusCode(status_code)
    return RelayedSpan(
        tuple(dropped),
        name=name,
        context=_context(context),
        parent=_context(parent),
        resource=resource,
        attributes=attributes,
        events=[Event(n, a, timestamp=t) for n, a, t in events],
        links=[Link(_context(c), a) for c, a in links],  # type: ignore[arg-type]
        kind=SpanKind(kind),
        # The SDK refuses a description on a status other than ERROR.
        status=Status(code, status_description if code is StatusCode.ERROR else None),
        start_time=start_time,
        end_time=end_time,
        instrumentation_scope=None
        if scope is None
        else InstrumentationScope(scope[0], scope[1], scope[2], scope_attributes or None),
    )


def messages(spans: Sequence[ReadableSpan]) -> list[tuple[bytes, int]]:
    """Marshalled records, cut into socket messages: (message, spans in it)."""
    out: list[tuple[bytes, int]] = []
    chunk: list[bytes] = []
    size = 0
    for span in spans:
        record = marshal.dumps(span_record(span))
        if chunk and size + len(record) > MESSAGE_BYTES:
            out.append((marshal.dumps(chunk), len(chunk)))
            chunk, size = [], 0
        chunk.append(record)
        size += len(record)
    if chunk:
        out.append((marshal.dumps(chunk), len(chunk)))
    return out


class RelaySpanExporter(SpanExporter):
    """A pool child's exporter: to the relay, or itself (`direct`) when the relay cannot take it."""

    def __init__(self, sender: socket.socket, direct: SpanExporter) -> None:
        self.sender = sender
        self.direct = direct

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        sent = 0
        try:
            for message, count in messages(spans):
                self.sender.send(message, socket.MSG_DONTWAIT)
                sent += count
        except OSError:  # full (the relay is behind), or the relay is gone
            return self.direct.export(spans[sent:])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.direct.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SpanRelay:
    """The relay process and the socket to it; made by the worker's main process."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.sender: socket.socket | None = None
        self.pid: int | None = None

    def start(self) -> None:
        receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the relay process (covered by the integration tests)
            code = 0
            try:
                sender.close()
                serve(receiver, self.exporter, parent)
            except BaseException:
                log.exception("span relay failed")
                code = 1
            finally:
                os._exit(code)
        receiver.close()
        self.sender, self.pid = sender, pid
        log.info("span relay started (pid %d)", pid)

    def stop(self, timeout: float = 15.0) -> None:
        """After the pool's children are gone: the relay exports what it has, then exits."""
        if self.sender is None or self.pid is None:
            return
        self.sender.close()  # with every child's copy closed too, the relay reads the end
        self.sender = None
        pid, self.pid = self.pid, None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
                time.sleep(0.02)
            log.warning("span relay did not finish in %.0f s; stopping it", timeout)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except ChildProcessError:  # already reaped
            return


def serve(receiver: socket.socket, exporter: SpanExporter, parent: int) -> None:
    """The relay's loop: until every sender has closed (or the main process is gone)."""
    # Ctrl-C and SIGTERM reach the whole process group: the relay ends when its senders do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    receiver.setblocking(False)
    resources: dict[Any, Resource] = {}
    while True:
        readable, _, _ = select.select([receiver], [], [], PARENT_CHECK_SECONDS)
        if not readable:
            if os.getppid() != parent:
                break
            continue
        batch: list[ReadableSpan] = []
        ended = False
        # Export what has queued up meanwhile in the same request.
        while len(batch) < RELAY_BATCH_SPANS:
            try:
                message = receiver.recv(RECEIVE_BYTES)
            except BlockingIOError:
                break
            if not message:  # every sender has closed
                ended = True
                break
            batch.extend(_spans(message, resources))
        if batch:
            exporter.export(batch)
        if ended:
            break
    exporter.shutdown()


def _spans(message: bytes, resources: dict[Any, Resource]) -> list[ReadableSpan]:
    # The socket pair is private to this worker's processes: only our pool children write.
    records = marshal.loads(message)  # noqa: S302
    return [span_from_record(marshal.loads(r), resources) for r in records]  # noqa: S302
