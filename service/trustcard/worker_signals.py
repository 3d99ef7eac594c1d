"""Worker-side hooks connected through Celery signals."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import celeryd_after_setup
from celery.worker import state as worker_state

from trustcard.task_registry import recent_cancellations

log = logging.getLogger(__name__)


@celeryd_after_setup.connect
def load_cancellations(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Teach a starting worker the ids cancelled while it was not listening.

    Celery keeps revokes in worker memory only; a worker started after a cancel (a new pod,
    an autoscaled replica) would otherwise run a task the client already cancelled.
    """
    app = instance.app
    try:
        ids = recent_cancellations(app.backend.client, int(app.conf.result_expires))
    except Exception as exc:  # Redis may still be starting; revokes then arrive by broadcast
        log.warning("could not load cancelled task ids from the result backend: %s", exc)
        return
    for task_id in ids:
        worker_state.revoked.add(task_id)
    if ids:
        log.info("loaded %d cancelled task ids", len(ids))
