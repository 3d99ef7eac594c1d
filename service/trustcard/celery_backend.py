"""Celery's Redis result backend without per-submission pub/sub subscriptions."""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend

from trustcard.observability.tracing import tracer


class TrustcardRedisBackend(RedisBackend):  # type: ignore[misc]
    """RedisBackend that does not subscribe to each task's result channel on submission.

    The stock backend SUBSCRIBEs to `celery-task-meta-<id>` for every task a process sends,
    expecting the sender to wait on `.get()`. The API never does (it reads state by key), so
    those subscriptions would only pile up in the API process and in Redis.
    """

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        """Store with a span, so a trace shows when the result (or progress) was written."""
        with tracer.start_as_current_span("store_result", attributes={"celery.state": state}):
            return super().store_result(task_id, result, state, *args, **kwargs)

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Skip the result subscription; results are read by key when a client asks."""
