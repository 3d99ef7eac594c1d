"""How much work each measurement does: the full run and the quick smoke run."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Sizes:
    redis_pairs: int  # LPUSH+RPOP round trips of the raw Redis floor
    produce: int  # apply_async calls of the raw producer loop
    drain: int  # tasks queued before the worker starts
    e2e: int  # one-at-a-time tasks per latency loop (plus one cold start, left out)
    http_requests: int  # submissions per concurrency level, at most ...
    http_seconds: float  # ... or this long
    open_loop_seconds: float  # paced submissions at 70 % of the 64-client rate
    memory_tasks: int  # tasks between the warm and the final RSS sample
    memory_checkpoints: int  # RSS samples along the way

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


FULL = Sizes(
    redis_pairs=20_000,
    produce=5_000,
    drain=3_000,
    e2e=500,
    http_requests=4_000,
    http_seconds=8.0,
    open_loop_seconds=8.0,
    memory_tasks=10_000,
    memory_checkpoints=10,
)

SMOKE = Sizes(
    redis_pairs=1_000,
    produce=300,
    drain=120,
    e2e=40,
    http_requests=150,
    http_seconds=1.0,
    open_loop_seconds=1.0,
    memory_tasks=150,
    memory_checkpoints=1,
)
