"""The tracer provider's Resource: hashed once, and keeping configured attributes across fork."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.util.types import AttributeValue


class HashedOnceResource(Resource):
    """A Resource whose hash is computed when it is made.

    The OTLP encoder groups each exported span by its resource, hashing the resource once per
    span, and the SDK's Resource.__hash__ JSON-encodes every attribute each time: ~12 µs per
    span. Resource attributes are immutable, so the hash cannot go stale; equality is the
    SDK's.

    After a fork, the SDK merges a new `service.instance.id` into the resource of a provider
    made before it (a worker's pool children do not export: their spans carry the main
    process's resource, see span_relay). `configured` holds the attributes set by
    OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME; they win over any merge, as they do in
    Resource.create(), so an operator's service.instance.id is kept.
    """

    def __init__(
        self, resource: Resource, configured: Mapping[str, AttributeValue] | None = None
    ) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._configured = dict(configured or {})
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def merge(self, other: Resource) -> Resource:
        merged = super().merge(other)
        if self._configured:
            merged = merged.merge(Resource(self._configured))
        return HashedOnceResource(merged, self._configured)
