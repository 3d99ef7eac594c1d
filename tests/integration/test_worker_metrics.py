"""The worker's /metrics, scraped from the live worker of the integration stack."""

from __future__ import annotations

import httpx
import pytest

from tests.metrics_text import Samples, scrape, value
from tests.stack import ServiceStack, poll_until, submit, wait_until

pytestmark = pytest.mark.integration


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_outcomes_runtime_and_queue_wait_move_by_the_tasks_run(
    stack: ServiceStack, client: httpx.Client
) -> None:
    before = scrape(stack.worker_metrics_url)
    adds = [submit(client, "/tasks/test/add", x=i, y=2) for i in range(4)]
    failing = submit(client, "/tasks/test/fail")
    for task_id in adds:
        poll_until(client, task_id, {"completed"})
    poll_until(client, failing, {"failed"})
    after = scrape(stack.worker_metrics_url)

    def delta(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    for counter in ("received", "started", "succeeded"):
        assert delta(f"trustcard_task_{counter}_total", task_name="test.add") == 4, counter
    assert delta("trustcard_task_succeeded_total", task_name="test.fail") == 0
    assert (
        delta("trustcard_task_failed_total", task_name="test.fail", exception="DeliberateFailure")
        == 1
    )
    assert delta("trustcard_task_runtime_seconds_count", task_name="test.add") == 4
    assert delta("trustcard_task_runtime_seconds_count", task_name="test.fail") == 1
    # The API stamps each message at publish, so every start observes its queue wait.
    assert delta("trustcard_task_queue_wait_seconds_count", task_name="test.add") == 4
    assert 0 <= delta("trustcard_task_queue_wait_seconds_sum", task_name="test.add") < 20
    assert value(after, "trustcard_tasks_in_progress", task_name="test.add") == 0


def test_worker_up_info_and_pool_size(stack: ServiceStack) -> None:
    samples = scrape(stack.worker_metrics_url)
    assert value(samples, "trustcard_worker_up") == 1
    assert value(samples, "trustcard_worker_processes") == 2
    info = [labels for (name, labels) in samples if name == "trustcard_worker_info"]
    assert len(info) == 1
    assert dict(info[0])["max_tasks_per_child"] == "50"
    assert dict(info[0])["prefetch_multiplier"] == "1"
    # Every registered task's series exist from the start (rate() sees the first task).
    assert ("trustcard_task_succeeded_total", frozenset({("task_name", "test.long_task")})) in (
        samples
    )


def test_in_progress_then_revoked_when_cancelled(stack: ServiceStack, client: httpx.Client) -> None:
    before = scrape(stack.worker_metrics_url)
    task_id = submit(client, "/tasks/test/sleep", seconds=20)
    poll_until(client, task_id, {"processing"})
    running = scrape(stack.worker_metrics_url)
    assert value(running, "trustcard_tasks_in_progress", task_name="test.sleep") == 1

    assert client.delete(f"/tasks/{task_id}").status_code == 200

    def revoked() -> Samples | None:
        samples = scrape(stack.worker_metrics_url)
        done = moved(before, samples, "trustcard_task_revoked_total", task_name="test.sleep")
        idle = value(samples, "trustcard_tasks_in_progress", task_name="test.sleep") == 0
        return samples if done == 1 and idle else None

    after: Samples = wait_until(revoked, 15, interval=0.1, what="the revoke to be counted")
    # A cancel is not a failure, and a terminated task has no runtime to report.
    failed = [
        key
        for key in after
        if key[0] == "trustcard_task_failed_total" and ("task_name", "test.sleep") in key[1]
    ]
    assert all(after[key] == before.get(key, 0) for key in failed)
    assert moved(before, after, "trustcard_task_runtime_seconds_count", task_name="test.sleep") == 0
