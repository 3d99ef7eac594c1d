"""Redis stopped mid-session: 503 naming the dependency within ~2 s, then recovery by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.metrics_text import scrape, value
from tests.stack import ServiceStack, poll_until, submit, wait_until


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    service = ServiceStack(workdir=Path(tmp_path_factory.mktemp("outage")))
    try:
        yield service.start()
    finally:
        service.stop()


def test_redis_down_gives_503_and_recovers_without_restarts(outage_stack: ServiceStack) -> None:
    assert outage_stack.redis is not None
    assert outage_stack.worker is not None
    with outage_stack.client() as client:
        before = submit(client, "/tasks/test/add", x=1, y=1)
        assert poll_until(client, before, {"completed"})["result"] == 2
        api_pid = (
            outage_stack.api.process.pid if outage_stack.api and outage_stack.api.process else 0
        )
        worker_pid = outage_stack.worker.process.pid if outage_stack.worker.process else 0

        outage_stack.redis.stop()

        started = time.monotonic()
        response = client.post("/tasks/test/add", params={"x": 1, "y": 2})
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert elapsed < 2.5, f"503 took {elapsed:.2f} s"
        assert "unavailable" in response.json()["detail"]
        assert response.json()["dependency"] in {"broker", "result backend"}
        errors = scrape(f"{outage_stack.base_url}/metrics")
        assert (
            value(errors, "trustcard_submission_errors_total", cause="result_backend_unavailable")
            == 1
        )

        started = time.monotonic()
        health = client.get("/health")
        assert time.monotonic() - started < 2.5
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded"
        assert body["dependencies"]["broker"]["ok"] is False
        assert client.get("/health/detail").json()["dependencies"]["broker"]["error"]
        assert client.get("/health/live").status_code == 200

        status = client.get(f"/tasks/{before}")
        assert status.status_code == 503
        started = time.monotonic()
        assert client.get("/tasks/").status_code == 503
        assert time.monotonic() - started < 2.0

        outage_stack.redis.start()  # same port, same append-only file

        wait_until(
            lambda: client.get("/health").status_code == 200, 15, interval=0.2, what="health"
        )
        # The earlier result survived the restart (append-only persistence).
        assert client.get(f"/tasks/{before}").json()["result"] == 2
        after = submit(client, "/tasks/test/add", x=3, y=4)
        assert poll_until(client, after, {"completed"}, timeout=60)["result"] == 7

        assert outage_stack.api
        assert outage_stack.api.process
        assert outage_stack.api.process.pid == api_pid
        assert outage_stack.api.alive()
        assert outage_stack.worker.process
        assert outage_stack.worker.process.pid == worker_pid
        assert outage_stack.worker.alive()


def test_active_tasks_without_any_worker_answers_quickly(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    lonely = ServiceStack(workdir=Path(tmp_path_factory.mktemp("noworker")), with_worker=False)
    try:
        lonely.start()
        with httpx.Client(base_url=lonely.base_url, timeout=10) as client:
            started = time.monotonic()
            response = client.get("/tasks/")
            elapsed = time.monotonic() - started
            assert response.status_code == 200
            assert response.json() == {"active_tasks": {}, "count": 0}
            assert elapsed < 1.8, f"took {elapsed:.2f} s"
            # Submissions still queue; the task waits as `pending` for a worker.
            task_id = submit(client, "/tasks/test/add", x=1, y=1)
            assert client.get(f"/tasks/{task_id}").json()["status"] == "pending"
            # Cancelled while no worker was up: a worker that starts later must not run it.
            assert client.delete(f"/tasks/{task_id}").status_code == 200
            lonely.start_worker()
            follow_up = submit(client, "/tasks/test/add", x=2, y=2)
            assert poll_until(client, follow_up, {"completed"})["result"] == 4
            assert client.get(f"/tasks/{task_id}").json()["status"] == "cancelled"
            assert lonely.worker is not None
            assert "loaded 1 cancelled task ids" in lonely.worker.log()
            assert f"Discarding revoked task: test.add[{task_id}]" in lonely.worker.log()
    finally:
        lonely.stop()
