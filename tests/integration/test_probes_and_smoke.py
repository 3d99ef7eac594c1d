"""Kubernetes-facing commands: the worker heartbeat probe and the `helm test` smoke check."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.stack import ServiceStack, poll_until, submit, trustcard_cmd, wait_until


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        trustcard_cmd(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_heartbeat_keeps_beating_while_every_pool_process_is_busy(
    stack: ServiceStack, client: httpx.Client
) -> None:
    heartbeat = Path(stack.env()["WORKER_HEARTBEAT_FILE"])
    wait_until(heartbeat.exists, 10, what="the heartbeat file")
    busy = [submit(client, "/tasks/test/sleep", seconds=3) for _ in range(2)]
    for task_id in busy:
        poll_until(client, task_id, {"processing"})
    before = heartbeat.stat().st_mtime
    time.sleep(2.5)
    assert heartbeat.stat().st_mtime > before, "the event loop stopped beating while tasks ran"
    alive = _run("worker-alive", "--max-age", "5", env=stack.env())
    assert alive.returncode == 0, alive.stderr
    assert alive.stdout.startswith("alive: heartbeat")
    for task_id in busy:
        poll_until(client, task_id, {"completed"}, timeout=10)


def test_worker_alive_fails_on_stale_or_missing_heartbeat(tmp_path: Path) -> None:
    stale = tmp_path / "beat"
    stale.touch()
    old = time.time() - 120
    os.utime(stale, (old, old))
    env = {**os.environ, "WORKER_HEARTBEAT_FILE": str(stale)}
    result = _run("worker-alive", "--max-age", "60", env=env)
    assert result.returncode == 1
    # 120 s, plus the command's own start-up on a busy machine.
    assert re.search(r"heartbeat is 12\d s old", result.stderr), result.stderr

    missing = _run("worker-alive", env={**os.environ, "WORKER_HEARTBEAT_FILE": str(tmp_path / "x")})
    assert missing.returncode == 1
    assert "no heartbeat yet" in missing.stderr

    unset = {k: v for k, v in os.environ.items() if k != "WORKER_HEARTBEAT_FILE"}
    assert _run("worker-alive", env=unset).returncode == 2


def test_smoke_command_passes_against_a_running_stack(stack: ServiceStack) -> None:
    result = _run("smoke", "--api-url", stack.base_url, "--timeout", "20", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "ok: API ready" in result.stdout
    assert "ok: test.add(5, 3) = 8" in result.stdout


def test_smoke_command_fails_clearly_when_nothing_answers() -> None:
    result = _run(
        "smoke", "--api-url", "http://127.0.0.1:9", "--timeout", "1", env=dict(os.environ)
    )
    assert result.returncode == 1
    assert result.stderr.startswith("smoke test failed:")
