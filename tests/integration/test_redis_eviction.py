"""Redis memory limits (issue 14.4): an evicting policy is refused, a full Redis is survived.

Real redis-server, `trustcard api` and `trustcard worker` processes. Before the fix /health
said ok both with `allkeys-lru` (which silently dropped accepted tasks) and with a full Redis,
and a new worker exited at start against a full Redis (`Unrecoverable error: OutOfMemoryError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.faults import FINISHED, figures, queue_length, unacked_count, worker_less_stack
from tests.metrics_text import scrape, value
from tests.stack import Proc, trustcard_cmd, wait_until
from trustcard.local.redis_server import free_port
from trustcard.redis_clients.eviction import UNKNOWN, read_policy

pytestmark = pytest.mark.integration


def _admin(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def test_an_evicting_policy_makes_the_api_unready_and_is_logged(tmp_path: Path) -> None:
    with worker_less_stack(tmp_path) as stack, stack.client() as client:
        assert stack.redis is not None
        assert stack.api is not None
        admin = _admin(stack.redis.url(0))
        assert client.get("/health/ready").status_code == 200
        admin.config_set("maxmemory-policy", "allkeys-lru")

        ready = client.get("/health/ready")
        health = client.get("/health/detail").json()
        broker = health["dependencies"]["broker"]
        assert ready.status_code == 503, ready.text
        assert health["status"] == "degraded"
        assert broker["ok"] is False
        assert broker["maxmemory_policy"] == "allkeys-lru"
        assert "allkeys-lru" in broker["error"]
        metrics = scrape(f"{stack.base_url}/metrics")
        assert (
            value(
                metrics,
                "trustcard_redis_eviction_policy_safe",
                dependency="broker",
                policy="allkeys-lru",
            )
            == 0
        )
        # The series of the policy it had before is gone: one series per dependency.
        noeviction = frozenset({("dependency", "broker"), ("policy", "noeviction")})
        assert ("trustcard_redis_eviction_policy_safe", noeviction) not in metrics
        # One clear line per dependency, not one per probe.
        lines = [
            line for line in stack.api.log().splitlines() if "maxmemory-policy allkeys-lru" in line
        ]
        assert len(lines) == 2, lines  # broker and result backend (one server here)
        assert "ERROR" in lines[0]
        assert "noeviction" in lines[0]

        # The opt-in downgrade: a second API process with REDIS_EVICTION_POLICY_CHECK=warn.
        port = free_port()
        warned = Proc(
            "api-warn",
            trustcard_cmd("api", "--port", str(port)),
            {**stack.env(), "REDIS_EVICTION_POLICY_CHECK": "warn"},
            tmp_path / "api-warn.log",
        ).start()
        try:
            url = f"http://127.0.0.1:{port}/health/ready"

            def answered() -> httpx.Response | None:
                try:
                    return httpx.get(url, timeout=5)
                except httpx.HTTPError:
                    return None

            accepted = wait_until(answered, 30, interval=0.2, what="the warn API")
            assert accepted.status_code == 200, accepted.text
            detail = httpx.get(url.replace("/health/ready", "/health/detail"), timeout=5)
            assert "allkeys-lru" in detail.json()["dependencies"]["broker"]["warning"]
            assert "WARNING" in warned.log()
            assert "maxmemory-policy allkeys-lru" in warned.log()
        finally:
            warned.stop()

        # The worker says it at start, too.
        worker = Proc(
            "worker",
            trustcard_cmd("worker", "--concurrency", "1"),
            {**stack.env(), "WORKER_METRICS_PORT": "0"},
            tmp_path / "worker.log",
        ).start()
        try:
            wait_until(lambda: " ready." in worker.log() or not worker.alive(), 60)
            assert "maxmemory-policy allkeys-lru" in worker.log()
        finally:
            worker.stop()
        admin.close()


def test_policy_is_read_from_info_when_config_is_refused(tmp_path: Path) -> None:
    """Managed Redis often forbids CONFIG: INFO memory answers; with neither, `unknown`."""
    with worker_less_stack(tmp_path) as stack:
        assert stack.redis is not None
        admin = _admin(stack.redis.url(0))
        admin.config_set("maxmemory-policy", "volatile-lru")
        admin.acl_setuser(
            "noconfig", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
        )
        admin.acl_setuser(
            "blind",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            commands=["+@all", "-config", "-info"],
        )
        port = stack.redis.port
        with redis.Redis(port=port, username="noconfig", password="pw") as limited:
            with pytest.raises(redis.ResponseError):
                limited.config_get("maxmemory-policy")
            assert read_policy(limited).policy == "volatile-lru"
            assert not read_policy(limited).safe
        with redis.Redis(port=port, username="blind", password="pw") as blind:
            unknown = read_policy(blind)
            assert unknown.policy == UNKNOWN
            assert not unknown.safe
            assert "cannot read maxmemory-policy" in (unknown.problem("broker", "redis://x") or "")
        # An API whose Redis user may use neither: unready (unknown policy), yet submissions
        # still go through (the memory watermark needs INFO and steps aside).
        port_api = free_port()
        blind_api = Proc(
            "api-blind",
            trustcard_cmd("api", "--port", str(port_api)),
            {
                **stack.env(),
                "REDIS_URL": f"redis://blind:pw@127.0.0.1:{port}/0",
                "RESULT_BACKEND_URL": f"redis://blind:pw@127.0.0.1:{port}/1",
            },
            tmp_path / "api-blind.log",
        ).start()
        try:
            base = f"http://127.0.0.1:{port_api}"

            def ready() -> httpx.Response | None:
                try:
                    return httpx.get(f"{base}/health/ready", timeout=5)
                except httpx.HTTPError:
                    return None

            answer = wait_until(ready, 30, interval=0.2, what="the API of user blind")
            assert answer.status_code == 503
            assert (
                "cannot read maxmemory-policy"
                in httpx.get(f"{base}/health/detail", timeout=5).json()["dependencies"]["broker"][
                    "error"
                ]
            )
            submitted = httpx.post(f"{base}/tasks/test/add", params={"x": 1, "y": 2}, timeout=5)
            assert submitted.status_code == 202, submitted.text
        finally:
            blind_api.stop()
        admin.close()


async def _fill(base_url: str, limit: int) -> tuple[list[str], list[httpx.Response]]:
    """Submit in batches until the API answers 503 (Redis full); the accepted ids and 503s."""
    accepted: list[str] = []
    refused: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while len(accepted) < limit and len(refused) < 20:
            answers = await asyncio.gather(
                *(client.post("/tasks/test/add", params={"x": 1, "y": 2}) for _ in range(25))
            )
            for answer in answers:
                if answer.status_code == 202:
                    accepted.append(answer.json()["task_id"])
                else:
                    refused.append(answer)
    return accepted, refused


def test_a_full_redis_is_reported_and_a_new_worker_drains_it(tmp_path: Path) -> None:
    # 30 % of maxmemory left for the worker: its connections, unacked copies and results, and
    # the submissions accepted between two readings of INFO memory (0.5 s) on a loaded machine.
    watermark = 0.7
    env = {"REDIS_MEMORY_HIGH_WATERMARK": str(watermark)}
    with worker_less_stack(tmp_path, env) as stack, stack.client() as client:
        assert stack.redis is not None
        admin = _admin(stack.redis.url(0))
        used = int(admin.info("memory")["used_memory"])
        # Submissions stop 3 MB above today's use (client connections alone take ~1 MB here).
        admin.config_set("maxmemory", int((used + 3 * 1024 * 1024) / watermark))

        accepted, refused = asyncio.run(_fill(stack.base_url, limit=5000))
        assert refused, "Redis never filled up"
        assert {r.status_code for r in refused} == {503}
        detail = refused[0].json()
        assert detail["dependency"] in {"broker", "result backend"}
        assert "maxmemory" in detail["detail"]

        health = client.get("/health/detail")
        body = health.json()
        assert health.status_code == 503, body
        assert body["status"] == "degraded"
        assert "full" in body["dependencies"]["broker"]["error"]
        assert client.get("/health/ready").status_code == 503

        # A NEW worker, with the chart's plain command (no extra flags), against the full Redis.
        started = time.monotonic()
        worker = Proc(
            "worker",
            trustcard_cmd("worker", "--concurrency", "2"),
            {**stack.env(), "WORKER_METRICS_PORT": str(free_port())},
            tmp_path / "worker.log",
        ).start()
        try:
            wait_until(lambda: " ready." in worker.log() or not worker.alive(), 60)
            assert worker.alive(), worker.log()[-3000:]
            wait_until(
                lambda: (
                    (queue_length(stack) == 0 and unacked_count(stack) == 0) or not worker.alive()
                ),
                240,
                interval=0.5,
                what="the worker to drain the queue",
            )
            assert worker.alive(), worker.log()[-3000:]
            drained = time.monotonic() - started
            statuses: dict[str, str] = {}

            def all_finished() -> bool:
                for task_id in accepted:
                    if statuses.get(task_id) not in FINISHED:
                        statuses[task_id] = client.get(f"/tasks/{task_id}").json()["status"]
                return all(statuses[t] in FINISHED for t in accepted)

            with contextlib.suppress(AssertionError):  # the figures below say what is left
                wait_until(all_finished, 60, interval=0.5, what="every accepted task to finish")
            completed = sum(1 for s in statuses.values() if s == "completed")
            runs = worker.log().count("succeeded in")
            ready_after = wait_until(
                lambda: client.get("/health/ready").status_code == 200, 30, interval=0.5
            )
            figures(
                "full redis (noeviction), new worker drains",
                sent=len(accepted) + len(refused),
                accepted=len(accepted),
                refused_503=len(refused),
                completed=completed,
                lost=len(accepted) - completed,
                duplicated=max(0, runs - len(accepted)),
                recovery_seconds=round(drained, 2),
                unacked_copy_skipped=worker.log().count("without its unacked copy"),
            )
            assert completed == len(accepted), {
                s: sum(1 for v in statuses.values() if v == s) for s in set(statuses.values())
            }
            assert ready_after
        finally:
            worker.stop()
            admin.close()


def test_a_new_worker_starts_against_a_redis_refusing_all_writes(tmp_path: Path) -> None:
    """Redis past maxmemory (filled by anything): a worker starting then stays up (before: exit
    with `Unrecoverable error: OutOfMemoryError`), and drains once Redis has room again."""
    env = {"REDIS_MEMORY_HIGH_WATERMARK": "1"}  # the API fills Redis to its hard limit
    with worker_less_stack(tmp_path, env) as stack, stack.client() as client:
        assert stack.redis is not None
        admin = _admin(stack.redis.url(0))
        used = int(admin.info("memory")["used_memory"])
        limit = used + 2 * 1024 * 1024
        admin.config_set("maxmemory", limit)
        accepted, refused = asyncio.run(_fill(stack.base_url, limit=5000))
        assert refused, "Redis never filled up"
        assert "maxmemory" in refused[0].json()["detail"]
        # Keep it full: the fill's closed connections free their buffers, and Redis took small
        # writes again before the health check once (clean-clone CI run, 2026-12-04).
        now_used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", min(limit, now_used - 64 * 1024))
        health = client.get("/health/detail").json()
        assert "refuses writes" in health["dependencies"]["broker"]["error"], health

        worker = Proc(
            "worker",
            trustcard_cmd("worker", "--concurrency", "2"),
            {**stack.env(), "WORKER_METRICS_PORT": str(free_port())},
            tmp_path / "worker.log",
        ).start()
        try:
            wait_until(lambda: " ready." in worker.log() or not worker.alive(), 60)
            assert worker.alive(), worker.log()[-3000:]
            # Room again (the operator raised maxmemory): the same worker drains the queue.
            admin.config_set("maxmemory", limit + 2 * 1024 * 1024)
            wait_until(
                lambda: (
                    (queue_length(stack) == 0 and unacked_count(stack) == 0) or not worker.alive()
                ),
                240,
                interval=0.5,
                what="the worker to drain the queue",
            )
            assert worker.alive(), worker.log()[-3000:]
            statuses = [client.get(f"/tasks/{task_id}").json()["status"] for task_id in accepted]
            figures(
                "redis past maxmemory, new worker starts",
                sent=len(accepted) + len(refused),
                accepted=len(accepted),
                completed=statuses.count("completed"),
                not_recorded=len(accepted) - statuses.count("completed"),
                unacked_copy_skipped=worker.log().count("without its unacked copy"),
            )
            assert "Unrecoverable error" not in worker.log()
        finally:
            worker.stop()
            admin.close()
