"""Log setup shared by API and worker: text for people, JSON (LOG_FORMAT=json) for collectors.

Every record carries trace_id/span_id of the current span (empty when not tracing) and, inside
a task, task_id/task_name, so a log line leads to its trace and its task.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(task_prefix)s%(message)s"
JSON_FIELDS = (
    "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s "
    "%(trace_id)s %(span_id)s %(task_id)s %(task_name)s"
)
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger", "processName": "process"}


class ContextFilter(logging.Filter):
    """Adds trace and task context to each record (a filter on the handler sees every logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        else:
            record.trace_id = record.span_id = ""
        task = _current_task_request()
        record.task_id, record.task_name = task or ("", "")
        # Celery's own task lines (received, succeeded, ...) already name the task.
        named = record.name.startswith("celery.")
        record.task_prefix = f"{task[1]}[{task[0]}] " if task and not named else ""
        return True


def _current_task_request() -> tuple[str, str] | None:
    """(task id, task name) when called inside a running Celery task."""
    from celery import current_task

    try:
        request = current_task.request if current_task else None
    except Exception:  # no app or task context: a log line must never fail
        return None
    if request is None or not request.id:
        return None
    return str(request.id), str(current_task.name)


def make_handler(fmt: Literal["text", "json"]) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(level: str | int, fmt: Literal["text", "json"]) -> None:
    """One stderr handler on the root logger; library loggers propagate to it."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(make_handler(fmt))
    root.setLevel(level)
    # uvicorn's loggers would otherwise keep their own handlers and formats.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
