"""Records of the task ids this service issued, kept next to Celery's results in Redis.

Celery reports any unknown id as PENDING forever; recording each id at submission (with the
results' expiry) lets the API answer 404 for ids it never issued, and remember cancellations.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio

RECORD_PREFIX = "trustcard:task:"
# Sorted set of cancelled ids scored by time; workers load it at start (revokes are in memory).
CANCELLED_KEY = "trustcard:cancelled"


@dataclass(frozen=True)
class TaskRecord:
    """What the API knows about a task it issued."""

    task_id: str
    name: str
    submitted_at: str
    cancelled_at: str | None = None
    # The submission's trace (W3C hex), so status polls can link to it; None when not tracing.
    trace_id: str | None = None
    span_id: str | None = None
    # The submitting API key's id (security.key_id); None when authentication is off.
    owner: str | None = None

    @classmethod
    def new(
        cls,
        task_id: str,
        name: str,
        trace: tuple[str, str] | None = None,
        owner: str | None = None,
    ) -> TaskRecord:
        trace_id, span_id = trace or (None, None)
        return cls(
            task_id=task_id,
            name=name,
            submitted_at=utc_now_iso(),
            trace_id=trace_id,
            span_id=span_id,
            owner=owner,
        )

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies each value (~3 % of a submission's CPU).
        data = {name: getattr(self, name) for name in _RECORD_FIELD_NAMES}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> TaskRecord:
        data: dict[str, Any] = json.loads(raw)
        # Records written by another version may carry fields this one does not know.
        return cls(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})

    def cancelled(self) -> TaskRecord:
        return replace(self, cancelled_at=utc_now_iso())


_RECORD_FIELD_NAMES = tuple(f.name for f in fields(TaskRecord))
_RECORD_FIELDS = frozenset(_RECORD_FIELD_NAMES)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat()


def record_key(task_id: str) -> str:
    return RECORD_PREFIX + task_id


async def save_record(client: redis.asyncio.Redis, record: TaskRecord, ttl_seconds: int) -> None:
    """Remember an issued id for as long as its result lives."""
    await client.set(record_key(record.task_id), record.to_json(), ex=ttl_seconds)


async def forget_record(client: redis.asyncio.Redis, task_id: str) -> None:
    """Drop the record of a submission that never reached the broker."""
    await client.delete(record_key(task_id))


async def load_with_meta(
    client: redis.asyncio.Redis, task_id: str, meta_key: str
) -> tuple[TaskRecord | None, bytes | None]:
    """Read our record and Celery's result meta in one round trip."""
    raw_record, raw_meta = await client.mget([record_key(task_id), meta_key])
    record = TaskRecord.from_json(raw_record) if raw_record is not None else None
    return record, raw_meta if isinstance(raw_meta, bytes) else None


async def save_cancellation(
    client: redis.asyncio.Redis, record: TaskRecord, ttl_seconds: int
) -> None:
    """Mark a record cancelled and list the id for workers that start later."""
    now = time.time()
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(record_key(record.task_id), record.to_json(), ex=ttl_seconds)
        pipe.zadd(CANCELLED_KEY, {record.task_id: now})
        pipe.zremrangebyscore(CANCELLED_KEY, "-inf", now - ttl_seconds)
        pipe.expire(CANCELLED_KEY, ttl_seconds)
        await pipe.execute()


def recent_cancellations(client: redis.Redis, max_age_seconds: int) -> list[str]:
    """Ids cancelled within max_age_seconds (for a worker that was not up at revoke time)."""
    raw = client.zrangebyscore(CANCELLED_KEY, time.time() - max_age_seconds, "+inf")
    return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]
