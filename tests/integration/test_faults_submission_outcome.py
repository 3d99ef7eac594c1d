"""A submission answered 503 never runs behind the client's back.

Under a frozen Redis (SIGSTOP: connections accepted by the kernel, no answer, no RST) a
submission's write is sent and times out; Redis runs it when it thaws. Such a 503 says so: it
carries the task id and `"outcome": "unknown"`, and GET /tasks/{id} tells afterwards (404:
never queued; otherwise the task's status, as record and message are written together). A 503
without a task id means "not queued": that task must never run.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.faults import (
    Worker,
    figures,
    start_worker,
    stop_quietly,
    successes,
    wait_all,
    worker_less_stack,
)
from tests.stack import ServiceStack, submit, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SUBMISSIONS = 24
FREEZE_SECONDS = 8.0
OFFSET = 1000
# "Task test.add[<id>] succeeded in 0.00s: 1007": which x ran, whatever its id.
ADD_RESULT = re.compile(r"Task test\.add\[[0-9a-f-]{36}\] succeeded in [\d.e-]+s: (\d+)")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ServiceStack]:
    with worker_less_stack(tmp_path) as service:
        yield service


def _post(base_url: str, x: int) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=20) as client:
        return client.post("/tasks/test/add", params={"x": x, "y": OFFSET})


def test_a_503_under_a_frozen_redis_names_the_id_and_never_hides_a_run(
    stack: ServiceStack,
) -> None:
    assert stack.redis is not None
    assert stack.redis.process is not None
    worker: Worker | None = None
    try:
        worker = start_worker(stack, "worker")
        with stack.client() as client:
            # The API's first publish opens its broker channel; later ones use the script
            # that writes record and message together (the path a frozen Redis can run late).
            # (Two: the second loads the script into Redis, so a frozen one can run it later.)
            warm_up = [submit(client, "/tasks/test/add", x=-1, y=OFFSET) for _ in range(2)]
            wait_all(client, warm_up, {"completed"}, timeout=30)
        stack.redis.process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                responses = list(pool.map(lambda x: _post(stack.base_url, x), range(SUBMISSIONS)))
            slowest = max(r.elapsed.total_seconds() for r in responses)
            time.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - frozen_at)))
        finally:
            stack.redis.process.send_signal(signal.SIGCONT)
        thawed_at = time.monotonic()

        accepted = {x: r.json()["task_id"] for x, r in enumerate(responses) if r.status_code == 202}
        unknown = {
            x: r.json()["task_id"]
            for x, r in enumerate(responses)
            if r.status_code == 503 and "task_id" in r.json()
        }
        not_queued = [
            x for x, r in enumerate(responses) if r.status_code == 503 and "task_id" not in r.json()
        ]
        assert len(accepted) + len(unknown) + len(not_queued) == SUBMISSIONS, [
            (r.status_code, r.text) for r in responses
        ]
        for x in unknown:
            body = responses[x].json()
            assert body["outcome"] == "unknown"
            assert f"/tasks/{body['task_id']}" in body["detail"]

        with stack.client() as client:
            wait_until(lambda: client.get("/health/ready").status_code == 200, 20, what="ready")
            # What each unknown id turned out to be, once Redis answers again.
            found = {x: client.get(f"/tasks/{i}") for x, i in unknown.items()}
            queued_unknown = {x: i for x, i in unknown.items() if found[x].status_code == 200}
            never_queued = [x for x in unknown if found[x].status_code == 404]
            assert len(queued_unknown) + len(never_queued) == len(unknown), {
                x: r.text for x, r in found.items()
            }
            bodies = wait_all(
                client,
                [*accepted.values(), *queued_unknown.values()],
                {"completed"},
                timeout=40,
                what="every queued submission",
            )
            recovery = time.monotonic() - thawed_at
            # Anything else that Redis ran late would have run by now.
            time.sleep(2)

        log = worker.log()
        ran = [int(value) - OFFSET for value in ADD_RESULT.findall(log)]
        runs = successes([log], "test.add")
        ran_not_queued = [x for x in not_queued if x in ran]
        ran_unknown_404 = [x for x in never_queued if x in ran]
        figures(
            "submissions under a frozen Redis",
            sent=SUBMISSIONS,
            answered_202=len(accepted),
            answered_503_outcome_unknown=len(unknown),
            unknown_then_queued=len(queued_unknown),
            unknown_then_404=len(never_queued),
            answered_503_not_queued=len(not_queued),
            ran_despite_503_not_queued=len(ran_not_queued),
            ran_despite_404=len(ran_unknown_404),
            completed=len(bodies),
            lost=len(accepted) + len(queued_unknown) - len(bodies),
            duplicated=sum(1 for n in runs.values() if n > 1),
            slowest_answer_seconds=slowest,
            recovery_seconds=recovery,
        )
        # The API answered within seconds, never hung on the frozen Redis.
        assert slowest < 8
        assert not accepted or all(b["status"] == "completed" for b in bodies.values())
        # The promise of each answer holds.
        assert ran_not_queued == [], ran_not_queued
        assert ran_unknown_404 == [], ran_unknown_404
        assert all(runs[i] == 1 for i in [*accepted.values(), *queued_unknown.values()])
    finally:
        if stack.redis.process.poll() is None:
            stack.redis.process.send_signal(signal.SIGCONT)
        stop_quietly(worker)
