"""Metrics scraped from the live API and the queue exporter move by the right amounts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery import Celery

from tests.metrics_text import scrape, value
from tests.stack import Proc, ServiceStack, poll_until, submit, trustcard_cmd, wait_until
from trustcard.local.redis_server import free_port


def test_api_counts_submissions_requests_and_publish_latency(
    stack: ServiceStack, client: httpx.Client
) -> None:
    url = f"{stack.base_url}/metrics"
    before = scrape(url)
    ids = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(3)]
    for task_id in ids:
        poll_until(client, task_id, {"completed"})
    after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("trustcard_tasks_submitted_total", task_name="test.add") == 3
    assert moved("trustcard_broker_publish_duration_seconds_count") == 3
    assert (
        moved("trustcard_http_requests_total", route="/tasks/test/add", method="POST", status="202")
        == 3
    )
    polls = moved(
        "trustcard_http_requests_total", route="/tasks/{task_id}", method="GET", status="200"
    )
    assert polls >= 3
    assert (
        moved(
            "trustcard_http_request_duration_seconds_count", route="/tasks/test/add", method="POST"
        )
        == 3
    )
    # Raw paths never become labels (one series per route template, not per task id).
    assert not [key for key in after if any(task_id in str(key) for task_id in ids)]


def test_unknown_routes_share_one_label(stack: ServiceStack, client: httpx.Client) -> None:
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    samples = scrape(f"{stack.base_url}/metrics")
    assert (
        value(
            samples,
            "trustcard_http_requests_total",
            route="<unmatched>",
            method="GET",
            status="404",
        )
        >= 2
    )


@pytest.fixture
def idle_stack(tmp_path: Path) -> Iterator[ServiceStack]:
    service = ServiceStack(workdir=tmp_path / "idle", with_worker=False)
    try:
        yield service.start()
    finally:
        service.stop()


def test_exporter_queue_depth_rises_without_workers_and_falls_after(
    idle_stack: ServiceStack, tmp_path: Path
) -> None:
    port = free_port()
    exporter = Proc(
        "exporter",
        trustcard_cmd("exporter", "--port", str(port)),
        idle_stack.env(),
        tmp_path / "exporter.log",
    ).start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _answers(url), 30, what="the exporter")
        assert value(scrape(url), "trustcard_queue_depth", queue="analysis") == 0
        assert value(scrape(url), "trustcard_queue_exporter_redis_up") == 1

        with idle_stack.client() as client:
            for i in range(4):
                submit(client, "/tasks/test/add", x=i, y=1)
        assert idle_stack.redis is not None
        outsider = Celery(
            "outsider", broker=idle_stack.redis.url(0), backend=idle_stack.redis.url(1)
        )
        # Prioritised messages live in kombu's per-priority lists; they must be counted too.
        outsider.send_task("test.add", args=(1, 1), queue="analysis", priority=6)
        outsider.close()

        assert value(scrape(url), "trustcard_queue_depth", queue="analysis") == 5

        idle_stack.start_worker()
        wait_until(
            lambda: value(scrape(url), "trustcard_queue_depth", queue="analysis") == 0,
            30,
            interval=0.2,
            what="the queue to drain",
        )
        wait_until(lambda: value(scrape(url), "trustcard_tasks_unacked") == 0, 30, what="acks")
    finally:
        exporter.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
