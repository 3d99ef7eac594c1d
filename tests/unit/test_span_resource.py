"""The worker's tracer resource: hashed once, one service.instance.id per forked pool child."""

from __future__ import annotations

import json
import os

from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider

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
