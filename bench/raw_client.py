"""Celery client loops, each run in its own process (one JSON line on stdout).

    python -m bench.raw_client produce N   # apply_async loop, no worker needed
    python -m bench.raw_client e2e N       # apply_async -> result.get(), one at a time
    python -m bench.raw_client enqueue N   # queue N no-ops (for a drain) and print their ids

By default the task is bench.raw_app's no-op; `--task test.add --queue analysis` sends the
service's test.add by name instead, so our worker is timed with exactly the same client.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import psutil
from celery.result import AsyncResult

from bench.raw_app import QUEUE, TASK, app, noop

Send = Callable[[], AsyncResult]


def produce(n: int, send: Send) -> dict[str, object]:
    """A single-process producer loop: n apply_async calls, as fast as one thread goes."""
    send()  # opens the broker and backend connections
    calls_ms: list[float] = []
    started = time.perf_counter()
    for _ in range(n):
        before = time.perf_counter()
        send()
        calls_ms.append((time.perf_counter() - before) * 1000)
    seconds = time.perf_counter() - started
    return {
        "count": n,
        "seconds": seconds,
        "calls_ms": calls_ms,
        "rss_bytes": psutil.Process().memory_info().rss,
    }


def end_to_end(n: int, send: Send) -> dict[str, object]:
    """n + 1 sequential tasks (apply_async, then result.get()); index 0 is the cold start."""
    latencies_ms: list[float] = []
    for _ in range(n + 1):
        before = time.perf_counter()
        send().get(timeout=60)
        latencies_ms.append((time.perf_counter() - before) * 1000)
    return {"latencies_ms": latencies_ms}


def enqueue(n: int, send: Send) -> dict[str, object]:
    """Queue n tasks (the worker is not running yet); their ids identify the results."""
    return {"ids": [send().id for _ in range(n)]}


LOOPS = {"produce": produce, "e2e": end_to_end, "enqueue": enqueue}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_client")
    parser.add_argument("loop", choices=sorted(LOOPS))
    parser.add_argument("count", type=int)
    parser.add_argument("--task", default=TASK)
    parser.add_argument("--queue", default=QUEUE)
    args = parser.parse_args()
    task: str = args.task
    queue: str = args.queue

    def send() -> AsyncResult:
        if task == TASK:
            return noop.apply_async()
        # By name, as a plain client of the service would (test.add takes two numbers).
        return app.send_task(task, args=(1, 2), queue=queue)

    result = LOOPS[args.loop](args.count, send)
    app.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
