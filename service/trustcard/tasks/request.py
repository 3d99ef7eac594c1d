"""The worker-side request of every trustcard task (Celery's, with one failure path fixed)."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.request import Request

log = logging.getLogger(__name__)


class TrustcardRequest(Request):  # type: ignore[misc]
    """Celery's Request, but a task stopped after a broker connection loss stays redeliverable.

    On a connection loss Celery terminates running acks-late tasks (Redis will redeliver them),
    then stores a RETRY state and only then marks the request cancelled. While Redis is down
    that store fails once its retries run out (about 10 s), the mark is never set, and the
    terminated job is later taken for a revoke: REVOKED is stored and the message acked, so
    the task is never run again and shows `cancelled`. The job is already stopped when the
    store fails, so mark it cancelled regardless.
    """

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        try:
            super().cancel(pool, signal, emit_retry=emit_retry)
        except Exception as exc:
            if not self.time_start:
                raise
            log.warning(
                "task %s[%s] was stopped for redelivery, but its state could not be stored: %s",
                self.name,
                self.id,
                exc,
            )
        if self.time_start:
            self._already_cancelled = True
