"""OpenTelemetry traces: off unless an OTLP endpoint is configured by the standard OTEL_* vars.

One trace per submission: the API's HTTP span -> `apply_async/<task>` (publish) -> the worker's
`run/<task>` -> stage spans, each stored state an event on the span that stored it. The API
stores the submission's trace id with the task, so status polls can link to the task's trace
(they are separate traces).

Only OTLP over HTTP/protobuf is shipped (port 4318 on a Collector); it avoids grpcio's size.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags

log = logging.getLogger(__name__)

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
SUPPORTED_PROTOCOL = "http/protobuf"

tracer = trace.get_tracer("trustcard")

_provider: Any = None


def tracing_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """True when an OTLP endpoint is set and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARS)


def init_tracing(default_service_name: str) -> bool:
    """Install the SDK's provider with a batching OTLP exporter; False when tracing is off.

    Resource attributes, sampler, endpoint, headers and timeouts come from the OTEL_* variables
    (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG], ...). Idempotent.
    """
    if not init_provider(default_service_name):
        return False
    start_exporting()
    return True


def init_provider(default_service_name: str) -> bool:
    """Install the SDK's provider, not exporting yet; False when tracing is off. Idempotent."""
    global _provider
    if _provider is not None:
        return True
    if not tracing_configured():
        return False
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=build_resource(default_service_name))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def build_resource(default_service_name: str) -> Any:
    """Service name and version, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME and the detectors."""
    from opentelemetry.sdk.resources import (
        SERVICE_NAME,
        SERVICE_VERSION,
        OTELResourceDetector,
        Resource,
    )

    from trustcard import __version__
    from trustcard.observability.span_resource import HashedOnceResource

    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = os.environ.get(name)
        if protocol and protocol != SUPPORTED_PROTOCOL:
            log.warning("%s=%s is not supported; exporting %s", name, protocol, SUPPORTED_PROTOCOL)
    defaults = {SERVICE_NAME: default_service_name, SERVICE_VERSION: __version__}
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over the defaults.
    resource = Resource(defaults).merge(Resource.create())
    # Without OTEL_SERVICE_NAME the SDK names the service `unknown_service:<executable>`.
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    return HashedOnceResource(resource, OTELResourceDetector().detect().attributes)


_exporting_pid: int | None = None


def build_exporter() -> Any:
    """The OTLP/HTTP exporter (endpoint, headers, timeout, compression from OTEL_* variables)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def start_exporting() -> None:
    """Add the batching OTLP exporter to the installed provider, once per process.

    Its processor owns a thread and, once it has exported, its exporter an open HTTP
    connection: neither may be shared with a forked process.
    """
    global _exporting_pid
    if _provider is None or _exporting_pid == os.getpid():
        return
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    _provider.add_span_processor(BatchSpanProcessor(build_exporter()))
    _exporting_pid = os.getpid()
    endpoint = next(os.environ[name] for name in ENDPOINT_VARS if os.environ.get(name))
    log.info("tracing on: OTLP/HTTP to %s", endpoint)


def flush_tracing(timeout_millis: int = 5000) -> None:
    """Export buffered spans now (an API shutting down)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span as W3C hex, or None when not tracing."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def link_current_span(trace_id: str, span_id: str) -> None:
    """Link the current span (e.g. a status poll) to a task's trace."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    try:
        context = SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    except ValueError:
        return
    span.add_link(context, {"trustcard.link": "task_trace"})


@contextmanager
def stage_span(stage: str, index: int, total: int) -> Iterator[None]:
    """A child span per pipeline stage (a no-op span when tracing is off)."""
    attributes: dict[str, str | int] = {
        "trustcard.stage": stage,
        "trustcard.stage_index": index,
        "trustcard.stages": total,
    }
    with tracer.start_as_current_span(f"stage {stage}", attributes=attributes):
        yield


_celery_instrumented = False


def instrument_celery() -> None:
    """Producer spans (publish, context injected into headers) and consumer `run/<task>` spans."""
    global _celery_instrumented
    if _celery_instrumented:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]
    _celery_instrumented = True


def instrument_api(app: Any) -> None:
    """Trace HTTP requests (probes and scrapes excluded) and the publishes they make."""
    if not init_tracing("trustcard-api"):
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="/health,/metrics")
    instrument_celery()


# The worker's main process: the resource every pool child's spans are exported with, and the
# relay that receives and exports them (trustcard.observability.span_relay).
_worker_resource: Any = None
_span_relay: Any = None


def prepare_worker_tracing() -> None:
    """In the worker's main process, before the pool forks: the resource, instrumentation, relay.

    Pool children (a new one per max-tasks-per-child tasks) inherit the resource and the
    Celery instrumentation from here instead of building them (~7 ms of CPU per child:
    resource detection in a thread pool, the instrumentor's package-metadata check, the SDK's
    warning-filter regex), and hand their spans to this process's relay instead of exporting
    them (~10 ms per child). The main process runs no task and makes no span of its own.
    """
    global _worker_resource, _span_relay
    if not tracing_configured() or _span_relay is not None:
        return
    from trustcard.observability.span_relay import SpanRelay

    _worker_resource = build_resource("trustcard-worker")
    instrument_celery()
    _compile_sdk_warning_filter()
    _span_relay = SpanRelay(build_exporter(), _worker_resource)
    _span_relay.start()
    # worker_shutdown is not sent on every way out (a cold shutdown); the relay's stop()
    # does nothing in a pool child, which never runs exit handlers anyway (os._exit).
    atexit.register(stop_worker_tracing)


def log_worker_tracing() -> None:
    """Say where spans go (at worker_ready: worker_init comes before Celery's log set-up)."""
    if _span_relay is not None:
        endpoint = next(os.environ[name] for name in ENDPOINT_VARS if os.environ.get(name))
        log.info("tracing on: the main process exports the pool's spans, OTLP/HTTP to %s", endpoint)


def stop_worker_tracing() -> None:
    """In the worker's main process, after the pool stopped: export the spans left, stop."""
    global _span_relay
    if _span_relay is not None:
        _span_relay.stop()
        _span_relay = None


def _compile_sdk_warning_filter() -> None:
    """The SDK's get_tracer() installs a warning filter whose regex each process compiles once.

    Compiled here, it sits in the `re` cache every child inherits. The throwaway provider
    registers no exit hook and is freed at once.
    """
    from opentelemetry.sdk.trace import TracerProvider

    TracerProvider(resource=_worker_resource, shutdown_on_exit=False).get_tracer("trustcard")


def instrument_worker_process() -> None:
    """In each pool child: a provider whose spans go to the main process's relay.

    It has nothing to flush at the child's exit: each span is handed over as it ends.
    """
    global _provider
    if _span_relay is None or _provider is not None:
        return
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=_worker_resource, shutdown_on_exit=False)
    provider.add_span_processor(_span_relay.forwarder())
    trace.set_tracer_provider(provider)
    _provider = provider
