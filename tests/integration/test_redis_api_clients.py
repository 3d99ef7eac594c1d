"""The API's Redis clients (issue 14.5): stale pooled connections, long-polls, write probes.

Real redis-server and `trustcard api` processes. Before the fix every case failed: the sync
`redis.retry.Retry` given to the asyncio clients never retried (with redis-py 8.1: 503 on each
stale connection; 8.2 converts it with a UserWarning), long-polls shared the pool of
submissions and probes, and /health only PINGed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from tests.faults import figures, worker_less_stack
from tests.stack import ServiceStack, wait_until

pytestmark = pytest.mark.integration


def _submit_statuses(client: httpx.Client, count: int) -> Counter[int]:
    return Counter(
        client.post("/tasks/test/add", params={"x": 1, "y": i}).status_code for i in range(count)
    )


def _assert_asyncio_retry(stack: ServiceStack) -> None:
    """redis-py >= 8.2 converts a sync Retry given to an asyncio client (with a UserWarning in
    the log); older ones silently never retried: the clients must get the asyncio Retry."""
    assert stack.api is not None
    assert "synchronous redis.retry.Retry" not in stack.api.log()


def _warm_pool(base_url: str, concurrent: int) -> None:
    """Several submissions at once, so the API's pools hold several connections."""

    async def run() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            posts = [
                client.post("/tasks/test/add", params={"x": 1, "y": 2}) for _ in range(concurrent)
            ]
            answers = await asyncio.gather(*posts)
        assert all(a.status_code == 202 for a in answers), [a.text for a in answers]

    asyncio.run(run())


def test_submissions_and_probes_survive_a_redis_restart(tmp_path: Path) -> None:
    """Stale pooled connections after an AOF restart: reconnected, not answered 503."""
    with worker_less_stack(tmp_path) as stack, stack.client() as client:
        assert stack.redis is not None
        _warm_pool(stack.base_url, 8)
        started = time.monotonic()
        stack.redis.restart()  # same port and append-only file
        ready = client.get("/health/ready")
        statuses = _submit_statuses(client, 5)
        reads = Counter(client.get("/health").status_code for _ in range(3))
        figures(
            "redis restart (AOF), stale pooled connections",
            sent=5,
            accepted=statuses[202],
            refused=sum(statuses.values()) - statuses[202],
            seconds=round(time.monotonic() - started, 2),
        )
        assert ready.status_code == 200, ready.text
        assert statuses == {202: 5}, statuses
        assert reads == {200: 3}, reads
        _assert_asyncio_retry(stack)


def test_submissions_survive_redis_closing_idle_connections(tmp_path: Path) -> None:
    """Redis `timeout 3` closes the API's idle pooled connections; the next calls reconnect."""
    with worker_less_stack(tmp_path) as stack, stack.client() as client:
        assert stack.redis is not None
        admin = redis.Redis.from_url(stack.redis.url(0))
        admin.config_set("timeout", 3)
        _warm_pool(stack.base_url, 6)

        def api_connections_closed() -> bool:
            # Only this admin connection is left: Redis closed the API's idle ones.
            return len(admin.client_list()) == 1

        wait_until(api_connections_closed, 20, interval=0.5, what="Redis to close idle clients")
        statuses = _submit_statuses(client, 10)
        ready = client.get("/health/ready")
        figures("redis timeout 3, idle connections closed", sent=10, accepted=statuses[202])
        admin.close()
        assert statuses == {202: 10}, statuses
        assert ready.status_code == 200, ready.text
        _assert_asyncio_retry(stack)


def test_a_connection_closed_mid_command_is_retried_on_a_new_one(tmp_path: Path) -> None:
    """Redis drops the connections of commands in flight (as on a restart or failover): the
    asyncio Retry reconnects once. The sync Retry the clients had never retried: 503 each."""
    with worker_less_stack(tmp_path) as stack:
        assert stack.redis is not None
        admin = redis.Redis.from_url(stack.redis.url(0))
        _warm_pool(stack.base_url, 6)

        async def run() -> tuple[Counter[int], int]:
            async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
                # Writes wait in Redis while it is paused: these are in flight when killed.
                admin.client_pause(3000, all=False)
                posts = [
                    asyncio.create_task(http.post("/tasks/test/add", params={"x": 1, "y": 2}))
                    for _ in range(5)
                ]
                ready = asyncio.create_task(http.get("/health/ready"))
                deadline = time.monotonic() + 10
                while int(admin.info("clients")["blocked_clients"]) < 5:
                    assert time.monotonic() < deadline, "the API's writes never reached Redis"
                    await asyncio.sleep(0.05)
                admin.client_kill_filter(_type="normal", skipme=True)
                admin.client_unpause()
                answers = await asyncio.gather(*posts)
                return Counter(a.status_code for a in answers), (await ready).status_code

        statuses, ready = asyncio.run(run())
        figures("connections closed mid-command", sent=5, accepted=statuses[202])
        admin.close()
        assert statuses == {202: 5}, statuses
        assert ready == 200
        _assert_asyncio_retry(stack)


# Few slots, so the test needs few requests to reach both bounds.
LONG_POLL_ENV = {"API_KEYS": "key-a,key-b", "LONG_POLL_PER_CLIENT": "20", "LONG_POLL_MAX": "30"}


def test_long_polls_are_bounded_per_client_and_cannot_starve_others(tmp_path: Path) -> None:
    """150 waits of one client: 20 wait, the rest 429; another client's reads, waits and the
    readiness probe go on (before: 51 x 503 MaxConnectionsError for everyone)."""
    with worker_less_stack(tmp_path, LONG_POLL_ENV) as stack:
        a = {"X-API-Key": "key-a"}
        b = {"X-API-Key": "key-b"}
        with stack.client() as client:
            # No worker: these stay pending, so every wait lasts its full time.
            task = client.post("/tasks/test/add", params={"x": 1, "y": 1}, headers=a).json()
            task_id = task["task_id"]
            # Tasks belong to their key: b reads and waits on a task of its own.
            own = client.post("/tasks/test/add", params={"x": 2, "y": 2}, headers=b).json()
            b_task_id = own["task_id"]

        async def run() -> tuple[Counter[int], Counter[int], Counter[int], float]:
            # One connection per request: no kept-alive connection the server may have closed
            # (uvicorn: 5 s idle) is reused on a loaded machine.
            limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
            async with httpx.AsyncClient(
                base_url=stack.base_url, timeout=30, limits=limits
            ) as http:
                greedy = [
                    asyncio.create_task(
                        http.get(f"/tasks/{task_id}", params={"wait": 6}, headers=a)
                    )
                    for _ in range(150)
                ]
                await asyncio.sleep(1.5)  # the greedy waits are parked on Redis by now
                started = time.monotonic()
                other_reads = await asyncio.gather(
                    *(http.get(f"/tasks/{b_task_id}", headers=b) for _ in range(20)),
                    *(http.get("/health/ready") for _ in range(5)),
                )
                # b's own waits: 10 slots are left of LONG_POLL_MAX; the others answer at once.
                other_waits = await asyncio.gather(
                    *(
                        http.get(f"/tasks/{b_task_id}", params={"wait": 2}, headers=b)
                        for _ in range(20)
                    )
                )
                other_seconds = time.monotonic() - started
                greedy_answers = await asyncio.gather(*greedy)
            return (
                Counter(r.status_code for r in greedy_answers),
                Counter(r.status_code for r in other_reads),
                Counter(r.status_code for r in other_waits),
                other_seconds,
            )

        greedy, other_reads, other_waits, other_seconds = asyncio.run(run())
        figures(
            "150 long-polls of one client",
            greedy_200=greedy[200],
            greedy_429=greedy[429],
            greedy_503=greedy[503],
            others_ok=other_reads[200] + other_waits[200],
            others_failed=sum(other_reads.values())
            + sum(other_waits.values())
            - other_reads[200]
            - other_waits[200],
            seconds=round(other_seconds, 2),
        )
        assert greedy == {200: 20, 429: 130}, greedy
        assert other_reads == {200: 25}, other_reads
        assert other_waits == {200: 20}, other_waits
        # 10 waited their 2 s, 10 answered at once: nobody queued behind the greedy client.
        assert other_seconds < 10, other_seconds
        assert stack.api is not None
        assert stack.api.alive()


def test_readiness_reports_a_full_database_disk(tmp_path: Path) -> None:
    """SQLite on a 4 MiB tmpfs: filling the disk makes /health/ready 503 naming the database."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test mounts a tmpfs: run it as root")
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        env = {"DATABASE_URL": f"sqlite:///{disk / 'trustcard.db'}"}
        with worker_less_stack(tmp_path / "stack", env) as stack, stack.client() as client:
            assert client.get("/health/ready").status_code == 200
            _fill(disk / "filler")
            full = client.get("/health/ready")
            body = client.get("/health/detail").json()
            (disk / "filler").unlink()
            after = client.get("/health/ready")
            figures("sqlite disk full", ready_when_full=full.status_code, after=after.status_code)
            assert full.status_code == 503, body
            assert body["dependencies"]["database"]["ok"] is False
            assert "disk full" in body["dependencies"]["database"]["error"]
            assert body["dependencies"]["broker"]["ok"] is True
            assert after.status_code == 200, after.text
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(disk, ignore_errors=True)


def _fill(path: Path) -> None:
    """Write until the filesystem says ENOSPC (bounded: the tmpfs holds 4 MiB)."""
    chunk = b"\0" * 65536
    with path.open("wb") as out:
        for _ in range(1000):
            try:
                out.write(chunk)
                out.flush()
            except OSError:
                return
    raise AssertionError("the tmpfs never filled up")
