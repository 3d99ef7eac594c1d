"""Analyses whose task is gone are settled `failed` when someone looks at them.

An analysis row says `pending`/`processing` until its task stores a result or a failure. If the
task ended while the database was away (its own retries exhausted), or its message and record are
gone, nothing would ever move the row again, and deduplication would return the dead analysis for
ever (issue 14.7). The API checks the task's state in the result backend when it reads such a row
(GET, and deduplication of a new submission) and marks the row failed with the reason; a new
submission of the same post then starts a fresh analysis.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from trustcard.api import task_queue
from trustcard.api.database import run_db
from trustcard.api.errors import DependencyUnavailable
from trustcard.api.resources import ApiResources
from trustcard.db import repository
from trustcard.db.models import RUNNING_STATUSES, Analysis, utc_now
from trustcard.task_model.status import TaskStatus, TaskView

log = logging.getLogger(__name__)

# A fresh row may not have its task record yet: the API writes the row, then record + message.
RECORD_GRACE = timedelta(seconds=60)


def dead_reason(
    status: str, created_at: datetime, task: TaskView | None, now: datetime
) -> str | None:
    """Why a running analysis can no longer finish, or None while its task may still run it."""
    if status not in RUNNING_STATUSES:
        return None
    if task is None:
        if now - created_at <= RECORD_GRACE:
            return None
        return "its task is gone (no record in the result backend: expired, or Redis lost it)"
    if task.status is TaskStatus.CANCELLED:
        # The worker's own wording (tasks.analysis_tasks.mark_cancelled): one reason either way.
        return f"cancelled (task {task.task_id} revoked)"
    if task.status is TaskStatus.FAILED:
        detail = f": {task.error}" if task.error else ""
        return f"its task ended failed{detail}"
    if task.status is TaskStatus.COMPLETED:
        return "its task completed, but the result never reached the database"
    return None


async def settle_if_dead(res: ApiResources, analysis: Analysis) -> bool:
    """Mark a running analysis failed when its task is over; True if it did.

    When the result backend cannot be read the row is left as it is: no verdict without evidence.
    """
    if analysis.status not in RUNNING_STATUSES or not analysis.task_id:
        return False
    try:
        view = await task_queue.lookup(res, analysis.task_id)
    except DependencyUnavailable:
        return False
    reason = dead_reason(analysis.status, analysis.created_at, view, utc_now())
    if reason is None:
        return False
    log.warning("analysis %s settled failed: %s", analysis.id, reason)
    await run_db(res, lambda session: repository.mark_failed(session, analysis.id, reason))
    return True
