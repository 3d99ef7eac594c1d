"""Flower, really: `trustcard flower` beside a real Redis, worker and API; tasks submitted
through our API show up in Flower's own HTTP API with their states; auth is enforced."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import Proc, ServiceStack, poll_until, submit, trustcard_cmd, wait_until
from trustcard.local.redis_server import free_port

pytestmark = pytest.mark.integration

CREDENTIALS = ("ops", "s3cret-flower")


def start_flower(stack: ServiceStack, *args: str, **env: str) -> tuple[Proc, str]:
    """`trustcard flower` on a free port against the stack's Redis; waits for /healthcheck."""
    port = free_port()
    proc = Proc(
        "flower",
        trustcard_cmd("flower", "--port", str(port), *args),
        {**stack.env(), **env},
        stack.workdir / f"flower-{port}.log",
    ).start()
    base = f"http://127.0.0.1:{port}"
    prefix = next((a.split("=", 1)[1] for a in args if a.startswith("--url-prefix=")), "")
    health = f"{base}/{prefix}/healthcheck" if prefix else f"{base}/healthcheck"

    def up() -> bool:
        assert proc.alive(), proc.log()[-3000:]
        try:
            return httpx.get(health, timeout=1).text == "OK"
        except httpx.HTTPError:
            return False

    wait_until(up, 60, what="Flower's /healthcheck")
    # /healthcheck answers before Flower subscribes to events: wait for a worker heartbeat.
    wait_until(lambda: receives_events(health.replace("healthcheck", "metrics")), 30, 0.2)
    return proc, base


def receives_events(metrics_url: str) -> bool:
    """Flower has seen a worker's heartbeat event (sent every 2 s, task events on or off)."""
    metrics = httpx.get(metrics_url, timeout=5).text
    return 'flower_worker_online{worker="trustcard@' in metrics


@pytest.fixture(scope="module")
def events_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """API and worker with WORKER_SEND_TASK_EVENTS=true (what worker.taskEvents sets)."""
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("flower")),
        env_overrides={"WORKER_SEND_TASK_EVENTS": "true"},
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def flower(events_stack: ServiceStack) -> Iterator[str]:
    user, password = CREDENTIALS
    proc, base = start_flower(events_stack, FLOWER_BASIC_AUTH=f"{user}:{password}")
    try:
        yield base
    finally:
        proc.stop()


def _get(base: str, path: str, **params: Any) -> Any:
    response = httpx.get(base + path, params=params, auth=CREDENTIALS, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_flower_lists_the_worker_and_the_tasks_with_their_states(
    events_stack: ServiceStack, flower: str
) -> None:
    assert "task events: ON" in events_stack.worker.log()  # type: ignore[union-attr]
    with events_stack.client() as client:
        added = submit(client, "/tasks/test/add", x=2, y=3)
        failed = submit(client, "/tasks/test/fail")
        sleeping = submit(client, "/tasks/test/sleep", seconds=30)
        assert poll_until(client, added, {"completed"})["result"] == 5
        poll_until(client, failed, {"failed"})
        poll_until(client, sleeping, {"processing"})

    def states() -> dict[str, str] | None:
        tasks = _get(flower, "/api/tasks")
        seen = {
            task_id: tasks[task_id]["state"]
            for task_id in (added, failed, sleeping)
            if task_id in tasks
        }
        wanted = {added: "SUCCESS", failed: "FAILURE", sleeping: "STARTED"}
        return seen if seen == wanted else None

    wait_until(states, 30, interval=0.5, what="Flower to show the three tasks' states")
    tasks = _get(flower, "/api/tasks")
    assert tasks[added]["name"] == "test.add"
    assert tasks[added]["result"] == "5"
    assert tasks[failed]["exception"]
    # Sent by the API (task_send_sent_event): Flower saw the publish, not only the worker.
    info = _get(flower, f"/api/task/info/{added}")
    assert info["sent"] is not None
    assert info["received"] is not None

    workers = wait_until(lambda: _get(flower, "/api/workers", refresh="true"), 30, interval=0.5)
    assert len(workers) == 1
    name, worker = next(iter(workers.items()))
    assert name.startswith("trustcard@")
    assert [q["name"] for q in worker["active_queues"]] == ["analysis"]
    assert "test.add" in worker["registered"]
    assert worker["stats"]["pool"]["max-concurrency"] == 2
    with events_stack.client() as client:
        client.delete(f"/tasks/{sleeping}")


def test_flower_refuses_requests_without_valid_credentials(flower: str) -> None:
    for auth in (None, ("ops", "wrong"), ("other", CREDENTIALS[1])):
        for path in ("/api/workers", "/api/tasks", "/", "/tasks"):
            response = httpx.get(flower + path, auth=auth, timeout=10)
            assert response.status_code == 401, (path, auth, response.status_code)
    # Probes and Prometheus stay open (no secret in a probe), and /metrics counts events.
    assert httpx.get(flower + "/healthcheck", timeout=10).text == "OK"
    metrics = httpx.get(flower + "/metrics", timeout=10).text
    assert 'flower_events_total{task="test.add",type="task-succeeded"' in metrics


def test_flower_read_only_by_default(flower: str, events_stack: ServiceStack) -> None:
    workers = _get(flower, "/api/workers")
    name = next(iter(workers))
    response = httpx.post(f"{flower}/api/worker/pool/shrink/{name}", auth=CREDENTIALS, timeout=10)
    assert response.status_code == 403
    assert events_stack.worker is not None
    assert events_stack.worker.alive()


def test_flower_refuses_to_start_without_credentials_unless_told(
    events_stack: ServiceStack,
) -> None:
    port = free_port()
    proc = Proc(
        "flower-noauth",
        trustcard_cmd("flower", "--port", str(port)),
        events_stack.env(),
        events_stack.workdir / "flower-noauth.log",
    ).start()
    assert proc.process is not None
    assert proc.process.wait(60) == 2
    assert "FLOWER_BASIC_AUTH is not set" in proc.log()
    # --no-auth (behind an authenticating proxy) serves the API openly, under a path prefix.
    open_proc, base = start_flower(events_stack, "--no-auth", "--url-prefix=flower")
    try:
        workers = httpx.get(f"{base}/flower/api/workers", timeout=10)
        assert workers.status_code == 200
        assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 404
    finally:
        open_proc.stop()


def test_without_task_events_flower_does_not_switch_them_on(tmp_path: Path) -> None:
    """worker.taskEvents off (the default): no task reaches Flower, even after Flower's
    enable_events period (5 s) has passed; it lists the worker only."""
    stack = ServiceStack(workdir=tmp_path).start()
    try:
        assert stack.worker is not None
        assert "task events: OFF" in stack.worker.log()
        proc, base = start_flower(stack, FLOWER_BASIC_AUTH=":".join(CREDENTIALS))
        try:
            time.sleep(7)
            with stack.client() as client:
                task_id = submit(client, "/tasks/test/add", x=1, y=1)
                assert poll_until(client, task_id, {"completed"})["result"] == 2
            time.sleep(2)
            assert _get(base, "/api/tasks") == {}
            assert len(wait_until(lambda: _get(base, "/api/workers"), 30, interval=0.5)) == 1
            assert "WORKER_SEND_TASK_EVENTS is off" in proc.log()
        finally:
            proc.stop()
    finally:
        stack.stop()


def test_dev_flower_runs_beside_the_stack(tmp_path: Path) -> None:
    port, flower_port = free_port(), free_port()
    dev = Proc(
        "dev",
        trustcard_cmd(
            "dev",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--flower",
            "--flower-port",
            str(flower_port),
        ),
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        tmp_path / "dev.log",
    ).start()
    try:
        wait_until(lambda: "  flower " in dev.log() or not dev.alive(), 90, what="dev")
        assert dev.alive(), dev.log()[-3000:]
        assert f"http://127.0.0.1:{flower_port}/" in dev.log()
        flower = f"http://127.0.0.1:{flower_port}"
        wait_until(lambda: " ready." in dev.log(), 60, what="the worker")
        wait_until(lambda: receives_events(f"{flower}/metrics"), 30, 0.2, what="dev's Flower")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            task_id = submit(client, "/tasks/test/add", x=5, y=3)
            poll_until(client, task_id, {"completed"}, timeout=30)

        def listed() -> bool:
            try:
                tasks = httpx.get(f"{flower}/api/tasks", timeout=5).json()
            except httpx.HTTPError:
                return False
            return bool(tasks.get(task_id, {}).get("state") == "SUCCESS")

        wait_until(listed, 30, interval=0.5, what="dev's Flower to list the task")
        assert dev.process is not None
        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(30) == 0
    finally:
        dev.stop(signal.SIGINT, timeout=30)
