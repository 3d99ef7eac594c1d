"""Log setup shared by API, worker and CLI: text for people, JSON (LOG_FORMAT=json) for collectors.

python-json-logger, not structlog: every line here comes from stdlib loggers (uvicorn, Celery,
kombu, ours), and python-json-logger is a stdlib Formatter, so one handler renders them all
without a second pipeline beside logging's.

Every record carries trace_id/span_id of the current span (empty when not tracing), the API's
request_id inside a request and, on worker lines, task_id/task_name, so a line leads to its
trace, its request and its task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(task_prefix)s%(message)s"
JSON_FIELDS = (
    "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s "
    "%(trace_id)s %(span_id)s %(request_id)s %(task_id)s %(task_name)s"
)
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger", "processName": "process"}
# Record attributes never written as JSON fields: uvicorn's `color_message` (ANSI codes), the
# text format's prefix, Celery's `data` (the task's id and name become task_id/task_name).
HIDDEN_ATTRS = (*RESERVED_ATTRS, "color_message", "task_prefix", "data", "taskName")

# Set by `trustcard worker` for the Celery it execs: configure logging at the app's import.
EARLY_LOGGING_ENV = "TRUSTCARD_WORKER_EARLY_LOGGING"
# The API request being answered (set by api/request_guard.py).
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line, `time` in ISO-8601 UTC with milliseconds (…T06:21:28.104Z)."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__(JSON_FIELDS, rename_fields=JSON_RENAMES, reserved_attrs=HIDDEN_ATTRS)


class ContextFilter(logging.Filter):
    """Adds trace, request and task context to each record (on the handler: sees every logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        else:
            record.trace_id = record.span_id = ""
        record.request_id = REQUEST_ID.get()
        task = _current_task_request() or _celery_line_task(record)
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


def _celery_line_task(record: logging.LogRecord) -> tuple[str, str] | None:
    """The task a Celery line is about, logged outside it (received, succeeded, failed).

    Celery passes the task's id and name as `extra={"data": {...}}` on those lines.
    """
    data = getattr(record, "data", None)
    if isinstance(data, dict) and data.get("id") and data.get("name"):
        return str(data["id"]), str(data["name"])
    return None


def make_handler(fmt: Literal["text", "json"]) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(level: str | int, fmt: Literal["text", "json"]) -> None:
    """One stderr handler on the root logger; library loggers propagate to it."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(make_handler(fmt))
    root.setLevel(level)
    # Python warnings (Celery's SecurityWarning, deprecations) as log lines, not raw stderr.
    logging.captureWarnings(True)
    # uvicorn's loggers would otherwise keep their own handlers and formats.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Alembic's INFO lines (plugins set up, DDL mode) on every schema check are noise.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Access lines come from trustcard.access (api/request_guard.py), with the route and request id.
    logging.getLogger("uvicorn.access").propagate = False


def say_as_json(message: str, stream: Any = sys.__stderr__) -> None:
    """Celery's console messages (`worker: Warm shutdown (MainProcess)`) as JSON lines.

    Celery prints them with os.write from its signal handlers, outside logging; this takes
    their place (worker.signals) and keeps os.write: no lock a signal could interrupt.
    """
    record = logging.LogRecord("celery.apps.worker", logging.INFO, __file__, 0, message, None, None)
    ContextFilter().filter(record)
    # Best effort, as Celery's own: losing the line must not break a shutdown.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(stream.fileno(), (JsonLineFormatter().format(record) + "\n").encode())
