"""The tracer resource: hashed once; a worker's pool children share its main process's."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider

from trustcard.observability import tracing
from trustcard.observability.span_resource import HashedOnceResource

ATTRIBUTES = {SERVICE_NAME: "trustcard-worker", SERVICE_INSTANCE_ID: "parent-id"}


def test_hash_and_equality_are_the_sdks() -> None:
    plain = Resource(ATTRIBUTES, "https://opentelemetry.io/schemas/1.11.0")
    hashed = HashedOnceResource(plain)
    assert hashed == plain
    assert hash(hashed) == hash(plain)
    assert {plain: 1}[hashed] == 1  # the encoder groups spans by resource in a dict


def test_merge_stays_hashed_once_and_configured_attributes_win() -> None:
    resource = HashedOnceResource(Resource(ATTRIBUTES), {SERVICE_INSTANCE_ID: "pod-1"})
    merged = resource.merge(Resource({SERVICE_INSTANCE_ID: "detected", "extra": "x"}))
    assert isinstance(merged, HashedOnceResource)
    assert merged.attributes[SERVICE_INSTANCE_ID] == "pod-1"
    assert merged.attributes["extra"] == "x"
    assert hash(merged) == hash(Resource(dict(merged.attributes)))


def instance_id_in_forked_child(provider: TracerProvider) -> tuple[str, str]:
    """(resource type, service.instance.id) the provider has in a forked child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        resource = provider.resource
        answer = [type(resource).__name__, str(resource.attributes.get(SERVICE_INSTANCE_ID))]
        os.write(write_end, json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        kind, instance_id = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return kind, instance_id


def test_each_forked_child_gets_its_own_instance_id() -> None:
    provider = TracerProvider(resource=HashedOnceResource(Resource(ATTRIBUTES)))
    first = instance_id_in_forked_child(provider)
    second = instance_id_in_forked_child(provider)
    assert first[0] == second[0] == "HashedOnceResource"
    assert len({first[1], second[1], "parent-id"}) == 3
    provider.shutdown()


def test_an_operator_set_instance_id_survives_fork() -> None:
    configured = {SERVICE_INSTANCE_ID: "parent-id"}
    provider = TracerProvider(resource=HashedOnceResource(Resource(ATTRIBUTES), configured))
    assert instance_id_in_forked_child(provider) == ("HashedOnceResource", "parent-id")
    provider.shutdown()


def in_forked_child(work: Callable[[], Any]) -> Any:
    """work()'s JSON-able result, computed in a forked child (its global state stays there)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write_end, json.dumps(work()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(answer)


def pool_child_resource() -> list[str]:
    tracing.instrument_worker_process()
    resource = tracing._provider.resource
    instance_id = str(resource.attributes[SERVICE_INSTANCE_ID])
    return [type(resource).__name__, str(resource.attributes[SERVICE_NAME]), instance_id]


def worker_main_process() -> list[Any]:
    """Prepare tracing as the worker's main process does, then fork two pool children."""
    tracing.prepare_worker_tracing()
    prepared = tracing._worker_resource
    return [
        str(prepared.attributes[SERVICE_INSTANCE_ID]),
        in_forked_child(pool_child_resource),
        in_forked_child(pool_child_resource),
    ]


@pytest.mark.parametrize("configured_id", [None, "pod-7"])
def test_pool_children_use_the_main_process_resource(
    monkeypatch: pytest.MonkeyPatch, configured_id: str | None
) -> None:
    """Their spans are exported by the main process: one service.instance.id per worker."""
    # Nothing is exported: the children end without a span.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-under-test")
    if configured_id:
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"service.instance.id={configured_id}")
    main_id, first, second = in_forked_child(worker_main_process)
    assert first == second == ["HashedOnceResource", "svc-under-test", main_id]
    if configured_id:
        assert main_id == configured_id
