"""Bounds on concurrent long-polls (GET /tasks/{id}?wait=): per client, and per API process.

Each wait holds a Redis subscriber connection for up to 30 s. One client's 150 waits used to
exhaust the shared pool (51 x 503 MaxConnectionsError) and fail other clients' reads and the
readiness probe. Now long-polls have their own pool (api/resources.py) and these limits:
- per client (API key, or address without keys): above LONG_POLL_PER_CLIENT a wait is refused
  with 429 and Retry-After, so one client cannot take every slot;
- per process: above LONG_POLL_MAX a wait answers at once with the task's current state (as
  `wait=0` would): the clients within their share are served, never refused for others' load.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException

# Seconds a refused client is asked to wait: about one long-poll slice of the others.
RETRY_AFTER_SECONDS = 1


class LongPollSlots:
    """Counts of running waits, in this process (each API replica bounds its own)."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._running: Counter[str] = Counter()

    @property
    def running(self) -> int:
        return self._running.total()

    @contextmanager
    def hold(self, client: str) -> Iterator[bool]:
        """True: wait (a slot is held until the block ends); False: answer at once.

        Raises 429 when `client` already runs its share of waits.
        """
        if self._running[client] >= self.per_client:
            raise HTTPException(
                status_code=429,
                detail=f"too many concurrent long-polls (?wait=) for this client: at most "
                f"{self.per_client}; retry, or poll without wait",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        if self.running >= self.total:
            yield False
            return
        self._running[client] += 1
        try:
            yield True
        finally:
            self._running[client] -= 1
            if not self._running[client]:
                del self._running[client]
