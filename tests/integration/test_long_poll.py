"""GET /tasks/{id}?wait=: answers as soon as the task finishes, or when the wait is over."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.stack import submit

pytestmark = pytest.mark.integration


def test_wait_returns_when_the_task_completes(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/sleep", seconds=1)
    started = time.monotonic()
    body = client.get(f"/tasks/{task_id}", params={"wait": 15}, timeout=20).json()
    elapsed = time.monotonic() - started
    assert body["status"] == "completed"
    # Woken by the result's publish, not by the end of the wait.
    assert 0.8 < elapsed < 5, elapsed


def test_wait_reports_failures_too(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/fail")
    body = client.get(f"/tasks/{task_id}", params={"wait": 10}, timeout=15).json()
    assert body["status"] == "failed"
    assert "DeliberateFailure" in body["error"]


def test_wait_gives_up_after_the_wait_with_the_current_state(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/sleep", seconds=4)
    started = time.monotonic()
    body = client.get(f"/tasks/{task_id}", params={"wait": 0.7}).json()
    elapsed = time.monotonic() - started
    assert body["status"] in {"pending", "processing"}
    assert 0.6 < elapsed < 3, elapsed
    client.delete(f"/tasks/{task_id}")


def test_wait_on_a_finished_task_answers_at_once(client: httpx.Client) -> None:
    task_id = submit(client, "/tasks/test/add", x=1, y=1)
    assert client.get(f"/tasks/{task_id}", params={"wait": 10}).json()["result"] == 2
    started = time.monotonic()
    assert client.get(f"/tasks/{task_id}", params={"wait": 10}).json()["status"] == "completed"
    assert time.monotonic() - started < 1


def test_wait_unknown_id_is_404_and_bad_waits_are_422(client: httpx.Client) -> None:
    assert client.get(f"/tasks/{uuid.uuid4()}", params={"wait": 5}).status_code == 404
    for wait in ("-1", "31", "soon"):
        response = client.get(f"/tasks/{uuid.uuid4()}", params={"wait": wait})
        assert response.status_code == 422, wait
        assert "wait" in response.text
