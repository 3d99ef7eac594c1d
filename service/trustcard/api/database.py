"""Database calls from async routes: sync SQLAlchemy on a few dedicated threads, bounded in time.

Why not the async engine: the repository is shared with the worker and the CLI (both sync), an
async SQLite driver is not a dependency, and every call is one short transaction. A handful of
threads (fewer than the engine's pool) keeps those calls off the event loop without contention.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from trustcard.api.errors import DependencyUnavailable
from trustcard.api.resources import ApiResources
from trustcard.config import redact_url

T = TypeVar("T")

# Longer than the engine's connect timeout (3 s), so a dead server reports its own error first.
DATABASE_TIMEOUT_SECONDS = 5.0


async def run_db(
    res: ApiResources,
    work: Callable[[Session], T],
    limit_seconds: float = DATABASE_TIMEOUT_SECONDS,
) -> T:
    """Run `work` in a session on a database thread; an outage becomes a 503 naming `database`."""
    url = redact_url(res.settings.DATABASE_URL)

    def in_session() -> T:
        with res.sessions() as session:
            return work(session)

    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limit_seconds):
            return await loop.run_in_executor(res.database_threads, context.run, in_session)
    except TimeoutError:
        raise DependencyUnavailable(
            "database", f"no answer from {url} within {limit_seconds:g} s", timed_out=True
        ) from None
    except DBAPIError as exc:
        # Integrity errors are handled inside the repository; what reaches here is an outage.
        reason = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else ""
        raise DependencyUnavailable(
            "database", f"{url}: {type(exc.orig or exc).__name__}: {reason}"
        ) from None
