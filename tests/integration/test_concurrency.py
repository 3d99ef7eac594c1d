"""Many concurrent clients: broker I/O never blocks the API's event loop."""

from __future__ import annotations

import asyncio
import time

import httpx
import redis

from tests.stack import ServiceStack, poll_until


async def _submit_many(base_url: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        return await asyncio.gather(
            *(client.post("/tasks/test/add", params={"x": i, "y": 1}) for i in range(count))
        )


def test_64_concurrent_submissions_all_accepted(stack: ServiceStack, client: httpx.Client) -> None:
    responses = asyncio.run(_submit_many(stack.base_url, 64))
    assert [response.status_code for response in responses] == [202] * 64
    ids = {response.json()["task_id"] for response in responses}
    assert len(ids) == 64
    last = responses[-1].json()["task_id"]
    assert poll_until(client, last, {"completed"}, timeout=30)["result"] == 64


async def _liveness_while_redis_paused(stack: ServiceStack) -> tuple[float, list[int]]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=20) as client:
        submissions = [
            asyncio.create_task(client.post("/tasks/test/add", params={"x": 1, "y": 1}))
            for _ in range(16)
        ]
        await asyncio.sleep(0.2)  # the submissions are now waiting on the paused Redis
        started = time.monotonic()
        live = await client.get("/health/live")
        latency = time.monotonic() - started
        assert live.status_code == 200
        done = await asyncio.gather(*submissions)
        return latency, [response.status_code for response in done]


def test_event_loop_serves_while_redis_stalls(stack: ServiceStack) -> None:
    assert stack.redis is not None
    admin = redis.Redis.from_url(stack.redis.url(0))
    # Redis holds every client's commands for 1 s: submissions wait, the event loop must not.
    admin.client_pause(1000, all=True)
    latency, statuses = asyncio.run(_liveness_while_redis_paused(stack))
    assert latency < 0.3, f"/health/live took {latency:.3f} s while Redis was paused"
    assert statuses == [202] * 16
