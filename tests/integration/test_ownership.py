"""Tasks belong to the key that submitted them; admin keys see all and change the claims."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import ServiceStack, poll_until, submit, wait_until

pytestmark = pytest.mark.integration

OWNER, OTHER, ADMIN = "owner-key-0123456789", "other-key-0123456789", "admin-key-0123456789"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    running = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("ownership")),
        env_overrides={"API_KEYS": f"{OWNER},{OTHER}", "ADMIN_API_KEYS": ADMIN},
    )
    try:
        yield running.start()
    finally:
        running.stop()


def client(stack: ServiceStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=10, headers={"X-API-Key": key})


def active_ids(http: httpx.Client) -> set[str]:
    body: dict[str, Any] = http.get("/tasks/").json()
    return {task["id"] for tasks in body["active_tasks"].values() for task in tasks}


def test_another_key_cannot_read_list_or_cancel_a_task(stack: ServiceStack) -> None:
    with (
        client(stack, OWNER) as owner,
        client(stack, OTHER) as other,
        client(stack, ADMIN) as admin,
    ):
        task_id = submit(owner, "/tasks/test/sleep", seconds=4)
        poll_until(owner, task_id, {"processing"}, timeout=30)
        wait_until(lambda: task_id in active_ids(owner), 15, what="the task in the owner's list")

        assert other.get(f"/tasks/{task_id}").status_code == 404
        assert other.get(f"/tasks/{task_id}", params={"wait": 1}).status_code == 404
        assert other.delete(f"/tasks/{task_id}").status_code == 404
        assert task_id not in active_ids(other)
        # The owner's task is untouched by the other key's attempts.
        assert owner.get(f"/tasks/{task_id}").json()["status"] == "processing"

        assert admin.get(f"/tasks/{task_id}").status_code == 200
        assert task_id in active_ids(admin)
        assert owner.delete(f"/tasks/{task_id}").status_code == 200
        assert poll_until(owner, task_id, {"cancelled"})["status"] == "cancelled"


def test_admin_key_may_cancel_any_task(stack: ServiceStack) -> None:
    with client(stack, OWNER) as owner, client(stack, ADMIN) as admin:
        task_id = submit(owner, "/tasks/test/sleep", seconds=30)
        assert admin.delete(f"/tasks/{task_id}").status_code == 200
        assert poll_until(owner, task_id, {"cancelled"})["status"] == "cancelled"


def test_changing_claims_needs_an_admin_key(stack: ServiceStack) -> None:
    claim = {"text": "The moon landing was staged", "verdict": "false"}
    with client(stack, OWNER) as owner, client(stack, ADMIN) as admin:
        refused = owner.post("/claims", json=claim)
        assert refused.status_code == 403
        assert "admin API key" in refused.json()["detail"]
        added = admin.post("/claims", json=claim)
        assert added.status_code == 201, added.text
        claim_id = added.json()["id"]
        assert claim_id in [item["id"] for item in owner.get("/claims").json()["items"]]
        assert owner.delete(f"/claims/{claim_id}").status_code == 403
        assert admin.delete(f"/claims/{claim_id}").status_code == 204


def test_public_health_names_no_urls_and_the_detail_needs_an_admin_key(
    stack: ServiceStack,
) -> None:
    for path in ("/health", "/health/ready"):
        public = httpx.get(stack.base_url + path, timeout=10)
        assert public.status_code == 200
        assert public.json() == {
            "status": "ok",
            "dependencies": {
                name: {"ok": True} for name in ("broker", "result_backend", "database")
            },
        }
        assert "redis://" not in public.text
        assert "sqlite" not in public.text
    assert httpx.get(stack.base_url + "/health/detail", timeout=10).status_code == 401
    with client(stack, OWNER) as owner, client(stack, ADMIN) as admin:
        assert owner.get("/health/detail").status_code == 403
        detail = admin.get("/health/detail").json()
    assert detail["dependencies"]["broker"]["url"].startswith("redis://")
    assert detail["dependencies"]["database"]["latency_ms"] is not None


def test_analyses_belong_to_their_key(stack: ServiceStack) -> None:
    post = {"url": "https://www.instagram.com/p/OwnedPost123/"}
    with (
        client(stack, OWNER) as owner,
        client(stack, OTHER) as other,
        client(stack, ADMIN) as admin,
    ):
        submitted = owner.post("/analysis/posts", json=post)
        assert submitted.status_code == 202, submitted.text
        analysis_id = submitted.json()["analysis_id"]
        assert owner.get(f"/analysis/posts/{analysis_id}").status_code == 200
        assert other.get(f"/analysis/posts/{analysis_id}").status_code == 404
        listed = [item["analysis_id"] for item in other.get("/analysis/posts").json()["items"]]
        assert analysis_id not in listed
        mine = [item["analysis_id"] for item in owner.get("/analysis/posts").json()["items"]]
        assert analysis_id in mine
        assert admin.get(f"/analysis/posts/{analysis_id}").status_code == 200
        everyone = [item["analysis_id"] for item in admin.get("/analysis/posts").json()["items"]]
        assert analysis_id in everyone
        # The same post from another key is its own analysis, not a join of the first one.
        theirs = other.post("/analysis/posts", json=post)
        assert theirs.status_code == 202, theirs.text
        assert theirs.json()["analysis_id"] != analysis_id
        assert other.get(theirs.json()["status_url"]).status_code == 200
