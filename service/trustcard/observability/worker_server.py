"""Worker bootstep serving WORKER_METRICS on WORKER_METRICS_PORT from the main process."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from celery import bootsteps
from prometheus_client import start_http_server

from trustcard.config import get_settings
from trustcard.observability.worker_metrics import WORKER_METRICS

log = logging.getLogger(__name__)

# The listening server, so forked pool children can close their inherited copy of the socket.
_server: Any = None


class MetricsServerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts after the pool (its process count is a metric) and stops with the worker."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def start(self, worker: Any) -> None:
        global _server
        settings = get_settings()
        WORKER_METRICS.describe_worker(
            task_names=[n for n in worker.app.tasks if not n.startswith("celery.")],
            concurrency=worker.concurrency,
            prefetch_multiplier=settings.WORKER_PREFETCH_MULTIPLIER,
            max_tasks_per_child=settings.WORKER_MAX_TASKS_PER_CHILD,
        )
        if not settings.WORKER_METRICS_PORT:
            return
        host, port = settings.WORKER_METRICS_HOST, settings.WORKER_METRICS_PORT
        try:
            _server, _thread = start_http_server(port, addr=host, registry=WORKER_METRICS.registry)
        except OSError as exc:
            # Tasks matter more than metrics: keep consuming, say loudly why nothing is served.
            log.error("worker metrics not served: cannot listen on %s:%d: %s", host, port, exc)
            return
        log.info("worker metrics on http://%s:%d/metrics", host, port)

    def stop(self, worker: Any) -> None:
        global _server
        WORKER_METRICS.up.set(0)
        if _server is not None:
            _server.shutdown()
            _server.server_close()
            _server = None


def close_inherited_socket() -> None:
    """In a pool child: drop the parent's listening socket (only the parent serves)."""
    if _server is not None:
        _server.socket.close()
