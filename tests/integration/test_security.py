"""API keys, per-client rate limits and size limits on a live API."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.metrics_text import scrape, value
from tests.stack import ServiceStack, poll_until, trustcard_cmd

pytestmark = pytest.mark.integration

SUBMITTED = "trustcard_tasks_submitted_total"
KEYS = ("first-key-0123456789", "second-key-9876543210")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("secured")),
        env_overrides={
            "API_KEYS": ",".join(KEYS),
            "RATE_LIMIT_PER_SECOND": "5",
            "RATE_LIMIT_BURST": "10",
        },
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_task_routes_need_a_valid_key(secured: ServiceStack) -> None:
    with httpx.Client(base_url=secured.base_url, timeout=10) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEYS[0][:-1]}):
            response = client.post("/tasks/test/add", params={"x": 1, "y": 2}, headers=headers)
            assert response.status_code == 401, headers
            assert "API key" in response.json()["detail"]
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/tasks/", headers={}).status_code == 401


def test_bearer_and_header_keys_work_and_probes_stay_open(secured: ServiceStack) -> None:
    with httpx.Client(base_url=secured.base_url, timeout=10) as client:
        ok = client.post(
            "/tasks/test/add",
            params={"x": 1, "y": 2},
            headers={"Authorization": f"Bearer {KEYS[0]}"},
        )
        assert ok.status_code == 202
        client.headers["X-API-Key"] = KEYS[0]
        assert poll_until(client, ok.json()["task_id"], {"completed"})["result"] == 3
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/openapi.json"):
        assert httpx.get(secured.base_url + path, timeout=5).status_code == 200, path


def test_rate_limit_per_key(secured: ServiceStack) -> None:
    other = {"X-API-Key": KEYS[1]}
    with httpx.Client(base_url=secured.base_url, timeout=10, headers=other) as client:
        codes = [
            client.get("/tasks/00000000-0000-0000-0000-000000000000").status_code for _ in range(16)
        ]
        assert codes.count(404) >= 10  # the burst goes through (unknown id: 404)
        assert 429 in codes
        limited = client.get("/tasks/00000000-0000-0000-0000-000000000000")
        if limited.status_code == 429:
            assert int(limited.headers["retry-after"]) >= 1
            assert "rate limit" in limited.json()["detail"]
    # The first key has its own bucket.
    first = httpx.get(
        secured.base_url + "/tasks/00000000-0000-0000-0000-000000000000",
        headers={"X-API-Key": KEYS[0]},
        timeout=5,
    )
    assert first.status_code in {404, 429}


def test_oversized_query_and_body_are_413(secured: ServiceStack) -> None:
    headers = {"X-API-Key": KEYS[0]}
    with httpx.Client(base_url=secured.base_url, timeout=10, headers=headers) as client:
        too_long = client.post("/tasks/test/fail", params={"message": "x" * 9000})
        assert too_long.status_code == 413
        assert "query string" in too_long.json()["detail"]
        submitted = value(scrape(f"{secured.base_url}/metrics"), SUBMITTED, task_name="test.add")
        big_body = client.post("/tasks/test/add?x=1&y=1", content=b"0" * (1_048_576 + 1))
        assert big_body.status_code == 413
        assert "request body" in big_body.json()["detail"]
        # Refused before the route ran: nothing was queued for it.
        after = value(scrape(f"{secured.base_url}/metrics"), SUBMITTED, task_name="test.add")
        assert after == submitted


def test_keys_never_reach_the_logs(secured: ServiceStack) -> None:
    assert secured.api is not None
    log = secured.api.log()
    assert "2 API keys" in log
    assert not any(key in log for key in KEYS)


def test_smoke_command_uses_the_key(secured: ServiceStack) -> None:
    time.sleep(2)  # let the earlier tests' buckets refill
    env = {**secured.env(), "TRUSTCARD_API_KEY": KEYS[0]}
    result = subprocess.run(
        trustcard_cmd("smoke", "--api-url", secured.base_url),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test.add(5, 3) = 8" in result.stdout
