"""OpenTelemetry traces: off unless an OTLP endpoint is configured by the standard OTEL_* vars.

One trace per submission: the API's HTTP span -> `apply_async/<task>` (publish) -> the worker's
`run/<task>` -> stage and result-store spans. The API stores the submission's trace id with the
task, so status polls can link to the task's trace (they are separate traces).

Only OTLP over HTTP/protobuf is shipped (port 4318 on a Collector); it avoids grpcio's size.
"""

from __future__ import annotations

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
    global _provider
    if _provider is not None:
        return True
    if not tracing_configured():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from trustcard import __version__

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
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    endpoint = next(os.environ[name] for name in ENDPOINT_VARS if os.environ.get(name))
    log.info("tracing on: OTLP/HTTP to %s", endpoint)
    return True


def flush_tracing(timeout_millis: int = 5000) -> None:
    """Export buffered spans now (a pool child about to exit, an API shutting down)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def shutdown_tracing() -> None:
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


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


def preload_for_children() -> None:
    """Import the SDK, exporter and instrumentation once in the worker's main process.

    Pool children are forked from it: without this each new child (one per max-tasks-per-child
    tasks) would import them again, ~50 ms per recycle.
    """
    if not tracing_configured():
        return
    import opentelemetry.exporter.otlp.proto.http.trace_exporter
    import opentelemetry.instrumentation.celery
    import opentelemetry.sdk.trace.export  # noqa: F401

    # The exporter's HTTP transport imports requests (and urllib3) inside its constructor, which
    # runs in every child: measured at a quarter of a recycling child's CPU when left to them.
    import requests  # noqa: F401


def instrument_worker_process() -> None:
    """In each pool child (the SDK's batch processor thread does not survive fork)."""
    if init_tracing("trustcard-worker"):
        instrument_celery()
