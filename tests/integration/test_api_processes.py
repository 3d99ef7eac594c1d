"""`trustcard api --workers/API_WORKERS` and `--no-access-log/API_ACCESS_LOG`, on a real stack."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil

from tests.stack import ServiceStack, wait_until

ACCESS_LINE = '"POST /tasks/test/add?x=1&y=2 HTTP/1.1" 202'
STARTED_LINE = "trustcard API "  # logged by each process's lifespan, through our handler


def _submit(stack: ServiceStack, count: int) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        for _ in range(count):
            response = client.post("/tasks/test/add", params={"x": 1, "y": 2})
            assert response.status_code == 202, response.text


def test_access_lines_are_logged_by_default(tmp_path: Path) -> None:
    stack = ServiceStack(tmp_path, with_worker=False).start()
    try:
        _submit(stack, 3)
        assert stack.api is not None
        api = stack.api
        wait_until(lambda: api.log().count(ACCESS_LINE) >= 3, 10, what="three access lines")
    finally:
        stack.stop()


def test_two_worker_processes_without_access_lines(tmp_path: Path) -> None:
    overrides = {"API_WORKERS": "2", "API_ACCESS_LOG": "false"}
    stack = ServiceStack(tmp_path, with_worker=False, env_overrides=overrides).start()
    try:
        assert stack.api is not None
        assert stack.api.process is not None
        api = stack.api
        supervisor = psutil.Process(stack.api.process.pid)
        wait_until(
            lambda: api.log().count(STARTED_LINE) >= 2, 30, what="both worker processes to start"
        )
        # uvicorn spawns its workers (multiprocessing's resource tracker is a child too).
        workers = [p for p in supervisor.children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in workers]
        _submit(stack, 40)
        log = api.log()
        assert ACCESS_LINE not in log
        # Each worker process logs through our handler: the text format's "[time: LEVEL/".
        started = [line for line in log.splitlines() if STARTED_LINE in line]
        assert len(started) == 2, started
        assert all(": INFO/" in line for line in started), started
    finally:
        stack.stop()
