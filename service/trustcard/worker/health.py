"""Worker liveness without broadcasts: a file the consumer's event loop touches while connected.

Kubernetes' liveness probe runs `trustcard worker-alive`, which only checks the file's age, so a
busy pool (tasks run in child processes) never fails it, and no `inspect ping` fans out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

from celery import bootsteps

from trustcard.config import get_settings


def touch(path: Path) -> None:
    path.touch(exist_ok=True)
    now = time.time()
    os.utime(path, (now, now))


def heartbeat_age(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last beat, or None when the file does not exist."""
    try:
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return (now if now is not None else time.time()) - modified


class HeartbeatStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer step: beats while the consumer runs (i.e. while connected to the broker)."""

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        settings = get_settings()
        self.path = Path(settings.WORKER_HEARTBEAT_FILE) if settings.WORKER_HEARTBEAT_FILE else None
        self.interval = settings.WORKER_HEARTBEAT_INTERVAL_SECONDS
        self.timer_ref: Any = None

    def start(self, parent: Any) -> None:
        if self.path is None:
            return
        touch(self.path)
        self.timer_ref = parent.timer.call_repeatedly(self.interval, self.beat)

    def beat(self) -> None:
        if self.path is not None:
            touch(self.path)

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None
