"""End-to-end check of a running deployment through its API (used by `helm test`)."""

from __future__ import annotations

import time

import httpx


class SmokeFailure(Exception):
    """The deployment did not behave; the message says what was seen."""


def check_ready(client: httpx.Client) -> str:
    response = client.get("/health/ready")
    if response.status_code != 200:
        raise SmokeFailure(f"/health/ready answered {response.status_code}: {response.text}")
    return "API ready, broker and result backend up"


def check_add(client: httpx.Client, timeout: float) -> str:
    """Submit test.add(5, 3) and wait for `completed` with result 8."""
    submitted = client.post("/tasks/test/add", params={"x": 5, "y": 3})
    if submitted.status_code != 202:
        raise SmokeFailure(f"submission answered {submitted.status_code}: {submitted.text}")
    task_id = submitted.json()["task_id"]
    deadline = time.monotonic() + timeout
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/tasks/{task_id}").json()
        if body.get("status") in {"completed", "failed", "cancelled"}:
            break
        time.sleep(0.5)
    if body.get("status") != "completed" or body.get("result") != 8:
        raise SmokeFailure(f"test.add(5, 3) ended as {body or 'nothing'} within {timeout:g} s")
    return f"test.add(5, 3) = 8 (task {task_id})"


def run_smoke(
    api_url: str, health_only: bool, timeout: float, api_key: str | None = None
) -> list[str]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=api_url, timeout=10, headers=headers) as client:
        results = [check_ready(client)]
        if not health_only:
            results.append(check_add(client, timeout))
    return results
