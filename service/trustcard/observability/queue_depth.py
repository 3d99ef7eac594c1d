"""Depth of the Celery queues in Redis, counted the way kombu stores them.

kombu keeps a queue as one Redis list per priority step: `<queue>` for priority 0 and
`<queue>\\x06\\x16<n>` for the other steps, so LLEN of the queue key alone (what celery-exporter
reports) misses prioritised tasks. Reserved-but-unacknowledged messages sit in the `unacked` hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# kombu.transport.redis defaults (Channel.sep, PRIORITY_STEPS); the service keeps them.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"


def queue_keys(queue: str, steps: Sequence[int] = PRIORITY_STEPS) -> list[str]:
    """The Redis list keys holding `queue`'s messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in steps]


@dataclass(frozen=True)
class QueueDepths:
    waiting: dict[str, int]
    unacked: int


def read_depths(client: redis.Redis, queues: Iterable[str]) -> QueueDepths:
    """LLEN of every priority list of each queue, plus HLEN of unacked, in one round trip."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for key in queue_keys(queue):
            pipe.llen(key)
    pipe.hlen(UNACKED_KEY)
    replies = pipe.execute()
    per_queue = len(PRIORITY_STEPS)
    waiting = {
        queue: sum(int(n) for n in replies[i * per_queue : (i + 1) * per_queue])
        for i, queue in enumerate(names)
    }
    return QueueDepths(waiting=waiting, unacked=int(replies[-1]))


class QueueDepthCollector(Collector):
    """Reads Redis at scrape time, so the value is never stale and nothing polls in between."""

    def __init__(self, client: redis.Redis, queues: Sequence[str]) -> None:
        self.client = client
        self.queues = list(queues)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "trustcard_queue_exporter_redis_up", "1 if the last scrape could read Redis"
        )
        try:
            depths = read_depths(self.client, self.queues)
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "trustcard_queue_depth",
            "Tasks waiting in the queue (all priority levels), not yet reserved by a worker",
            labels=["queue"],
        )
        for queue, waiting in depths.waiting.items():
            depth.add_metric([queue], waiting)
        yield depth
        unacked = GaugeMetricFamily(
            "trustcard_tasks_unacked",
            "Tasks reserved by workers and not yet acknowledged (running or prefetched)",
        )
        unacked.add_metric([], depths.unacked)
        yield unacked
