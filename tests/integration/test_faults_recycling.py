"""Child recycling at the production setting (max-tasks-per-child 50) over 1200 tasks: every
task's own result is stored, each ran exactly once, and the pool really was recycled.

test_recycling.py recycles after every task (1000 children) and counts spans and metrics;
this one checks results and executions per task id at the chart's setting.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from tests.faults import deliveries, figures, queue_length, successes, unacked_count
from tests.stack import ServiceStack, submit, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TASKS = 1200
MAX_TASKS_PER_CHILD = 50
# "Task test.add[<id>] succeeded in 0.001s: 3" logged by the child "ForkPoolWorker-<n>".
CHILD_SUCCESS = re.compile(
    r"\[(?P<at>[\d-]+ [\d:]+,\d+): \w+/ForkPoolWorker-(?P<child>\d+)\] "
    r"Task test\.add\[[0-9a-f-]{36}\] succeeded"
)


def longest_gap(stamps: list[str]) -> float:
    """Longest pause between two consecutive completions (a recycle stall shows up here)."""
    times = sorted(datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp() for s in stamps)
    return max((b - a for a, b in pairwise(times)), default=0.0)


@pytest.fixture(scope="module")
def recycling_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("recycling-50")),
        with_worker=False,
        env_overrides={"WORKER_MAX_TASKS_PER_CHILD": str(MAX_TASKS_PER_CHILD)},
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_recycling_every_50_tasks_loses_and_repeats_nothing(recycling_stack: ServiceStack) -> None:
    stack = recycling_stack
    with stack.client() as client:
        # Queued first, so the worker drains a backlog and every recycle is on the hot path.
        ids = {submit(client, "/tasks/test/add", x=n, y=1_000_000): n for n in range(TASKS)}
        assert queue_length(stack) == TASKS
        started = time.monotonic()
        worker = stack.start_worker()

        def finished() -> bool:
            return sum(successes([worker.log()], "test.add").values()) >= TASKS

        wait_until(finished, 90, interval=0.5, what=f"{TASKS} successes in the worker log")
        drained = time.monotonic() - started
        bodies = {task_id: client.get(f"/tasks/{task_id}").json() for task_id in ids}

    log = worker.log()
    effects = successes([log], "test.add")
    received = deliveries([log], "test.add")
    wrong = [i for i, n in ids.items() if bodies[i].get("result") != n + 1_000_000]
    duplicated = [i for i, n in effects.items() if n > 1]
    lost = [i for i in ids if not effects.get(i)]
    matches = list(CHILD_SUCCESS.finditer(log))
    children = Counter(m["child"] for m in matches)
    stall = longest_gap([m["at"] for m in matches])
    figures(
        "child recycling (max-tasks-per-child 50)",
        sent=TASKS,
        completed=sum(1 for b in bodies.values() if b["status"] == "completed"),
        lost=len(lost),
        duplicated=len(duplicated),
        wrong_result=len(wrong),
        children=len(children),
        most_tasks_in_one_child=max(children.values()),
        drain_seconds_with_startup=drained,
        tasks_per_second=TASKS / drained,
        longest_gap_seconds=stall,
        recovery_seconds=stall,
    )
    assert not lost
    assert not duplicated
    assert not wrong
    assert set(effects) == set(ids)
    assert all(n == 1 for n in received.values())
    # Recycled as configured: no child ran more than 50, so 1200 tasks needed >= 24 children.
    assert max(children.values()) <= MAX_TASKS_PER_CHILD
    assert len(children) >= TASKS // MAX_TASKS_PER_CHILD
    assert len(matches) == TASKS
    assert queue_length(stack) == 0
    assert unacked_count(stack) == 0
    assert worker.alive()
