"""The task API against a real Redis, a real worker process and a real API process."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
import redis

from tests.stack import ServiceStack, poll_until, submit, wait_until


def test_add_completes_with_the_sum(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/add", x=5, y=3)
    body = poll_until(client, task_id, {"completed", "failed"})
    assert body["status"] == "completed"
    assert body["result"] == 8
    assert body["error"] is None
    assert body["task_name"] == "test.add"
    assert body["submitted_at"]
    assert body["finished_at"]


def test_submission_response_shape(client: httpx.Client) -> None:
    response = client.post("/tasks/test/add", params={"x": 1, "y": 2})
    assert response.status_code == 202
    body = response.json()
    assert set(body) >= {"task_id", "status", "message"}
    assert body["status"] == "submitted"
    assert uuid.UUID(body["task_id"])
    assert body["status_url"] == f"/tasks/{body['task_id']}"


def test_long_task_goes_pending_processing_completed_with_progress(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/long", stage_seconds=0.6)
    first = client.get(f"/tasks/{task_id}").json()
    assert first["status"] in {"pending", "processing"}

    seen_stages: dict[int, str] = {}

    def record_progress() -> bool:
        body = client.get(f"/tasks/{task_id}").json()
        if body["status"] == "processing" and body["progress"]:
            progress = body["progress"]
            assert progress["total_stages"] == 5
            assert 0 <= progress["percent"] < 100
            # ISO-8601 UTC like submitted_at (it was epoch seconds).
            assert datetime.fromisoformat(progress["started_at"]).utcoffset() == timedelta(0)
            seen_stages[progress["stage_index"]] = progress["stage"]
        return bool(body["status"] == "completed")

    wait_until(record_progress, 20, interval=0.1, what="the long task to complete")
    assert len(seen_stages) >= 3, seen_stages
    assert seen_stages.get(2) in (None, "detect_ai_content")

    done = client.get(f"/tasks/{task_id}").json()
    assert done["progress"] is None
    stages = [stage["stage"] for stage in done["result"]["stages"]]
    assert stages == [
        "extract_content",
        "detect_ai_content",
        "detect_deepfake",
        "fact_check",
        "compute_trust_score",
    ]
    assert done["result"]["percent"] == 100


def test_sleep_task_completes(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/sleep", seconds=0.2)
    body = poll_until(client, task_id, {"completed", "failed"})
    assert body["status"] == "completed"
    assert body["result"]["slept_seconds"] >= 0.2


def test_failing_task_reports_a_readable_error(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/fail", message="model exploded")
    body = poll_until(client, task_id, {"completed", "failed"})
    assert body["status"] == "failed"
    assert body["result"] is None
    assert body["error"] == "DeliberateFailure: model exploded"
    assert "Traceback" not in body["error"]


def test_unknown_id_is_404(client: httpx.Client) -> None:
    response = client.get(f"/tasks/{uuid.uuid4()}")
    assert response.status_code == 404
    assert "not issued by this service" in response.json()["detail"]
    assert client.delete(f"/tasks/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize("bad_id", ["abc", "1234", "not-a-uuid-at-all-0000000000000000"])
def test_malformed_id_is_422(client: httpx.Client, bad_id: str) -> None:
    response = client.get(f"/tasks/{bad_id}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "task_id"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/tasks/test/add", {"x": "a", "y": 3}, "x"),
        ("/tasks/test/add", {"x": 1}, "y"),
        ("/tasks/test/add", {"x": 2**60, "y": 1}, "x"),
        ("/tasks/test/sleep", {"seconds": -1}, "seconds"),
        ("/tasks/test/sleep", {"seconds": 10**9}, "seconds"),
        ("/tasks/test/sleep", {"seconds": "nan"}, "seconds"),
        ("/tasks/test/long", {"stage_seconds": 100}, "stage_seconds"),
    ],
)
def test_bad_parameters_are_422(
    client: httpx.Client, path: str, params: dict[str, str | int | float], field: str
) -> None:
    response = client.post(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_unknown_route_and_wrong_method_answer_json(client: httpx.Client) -> None:
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    wrong = client.put("/tasks/test/add")
    assert wrong.status_code == 405
    assert wrong.json() == {"detail": "Method Not Allowed"}


def test_active_tasks_lists_a_running_task(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/sleep", seconds=3)
    poll_until(client, task_id, {"processing"})
    response = client.get("/tasks/")
    assert response.status_code == 200
    body = response.json()
    running = [task["id"] for tasks in body["active_tasks"].values() for task in tasks]
    assert task_id in running
    assert body["count"] == len(running)
    assert all(name.startswith("trustcard@") for name in body["active_tasks"])
    poll_until(client, task_id, {"completed"}, timeout=10)


def test_cancel_finished_task_is_409(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/add", x=1, y=1)
    poll_until(client, task_id, {"completed"})
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 409
    assert "already completed" in response.json()["detail"]


def test_cancel_running_task_stops_it(client: httpx.Client, stack: ServiceStack) -> None:
    task_id = submit(client, "/tasks/test/long", stage_seconds=2)
    poll_until(client, task_id, {"processing"})
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.json() == {
        "task_id": task_id,
        "cancelled": True,
        "message": "Task cancellation requested (task was running)",
    }
    body = poll_until(client, task_id, {"cancelled"})
    assert body["cancelled_at"]
    # It never completes: watch past the time the remaining stages would have taken.
    time.sleep(3)
    assert client.get(f"/tasks/{task_id}").json()["status"] == "cancelled"
    # Acknowledged, not left for redelivery after the visibility timeout.
    assert stack.redis is not None
    broker = redis.Redis.from_url(stack.redis.url(0), decode_responses=True)
    assert not any(task_id in message for message in broker.hvals("unacked"))
    # The worker replaced the terminated child and keeps serving.
    after = submit(client, "/tasks/test/add", x=2, y=2)
    assert poll_until(client, after, {"completed"})["result"] == 4


def test_cancel_queued_task_never_runs(client: httpx.Client) -> None:
    # Occupy both pool processes so the next task waits in the queue.
    blockers = [submit(client, "/tasks/test/sleep", seconds=2) for _ in range(2)]
    for blocker in blockers:
        poll_until(client, blocker, {"processing"})
    queued = submit(client, "/tasks/test/add", x=40, y=2)
    assert client.get(f"/tasks/{queued}").json()["status"] == "pending"

    response = client.delete(f"/tasks/{queued}")
    assert response.status_code == 200
    assert response.json()["message"] == "Task cancellation requested (task was queued)"

    for blocker in blockers:
        poll_until(client, blocker, {"completed"}, timeout=10)
    # Give the worker time to receive the queued message and skip it.
    time.sleep(1)
    body = client.get(f"/tasks/{queued}").json()
    assert body["status"] == "cancelled"
    assert body["result"] is None
