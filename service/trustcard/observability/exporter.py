"""`trustcard exporter`: queue depth for Prometheus, served by one process per release.

Queue depth is a property of Redis, not of a worker: exported from every worker replica it would
be counted once per replica and the HPA's per-replica average would be wrong. The chart runs one
exporter, and the prometheus-adapter rule reads `trustcard_queue_depth` from it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

import redis
from prometheus_client import CollectorRegistry, start_http_server

from trustcard.config import Settings
from trustcard.observability.queue_depth import QueueDepthCollector
from trustcard.redis_clients.connection import sync_client


def build_registry(client: redis.Redis, queues: Sequence[str]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueDepthCollector(client, queues))
    return registry


def serve(settings: Settings, queues: Sequence[str], host: str, port: int) -> None:
    """Serve /metrics of the broker's queues until SIGTERM or SIGINT."""
    client = sync_client(settings, settings.broker_url, socket_connect_timeout=2, socket_timeout=2)
    server, thread = start_http_server(port, host, registry=build_registry(client, queues))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"trustcard exporter: queue depth of {', '.join(queues)} on http://{host}:{port}/metrics",
        flush=True,
    )
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    client.close()
