"""The CLI as a user runs it: config errors, `trustcard dev` end to end, two devs at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.stack import Proc, poll_until, submit, trustcard_cmd, wait_until
from trustcard.local_redis import free_port


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"TASK_SOFT_TIME_LIMIT": "300"},
            "TASK_SOFT_TIME_LIMIT (300) must be lower than TASK_TIME_LIMIT",
        ),
        (
            {"WORKER_PREFETCH_MULTIPLIER": "0"},
            "WORKER_PREFETCH_MULTIPLIER: Input should be greater than or equal to 1",
        ),
        ({"REDIS_URL": "http://example"}, "REDIS_URL: must start with one of"),
        ({"REDIS_URL": "redis://host:port/0"}, "REDIS_URL: has a malformed port"),
        (
            {"BROKER_VISIBILITY_TIMEOUT": "100"},
            "BROKER_VISIBILITY_TIMEOUT (100) must exceed TASK_TIME_LIMIT",
        ),
    ],
)
@pytest.mark.parametrize("command", ["api", "worker"])
def test_invalid_config_fails_with_one_readable_line(
    env: dict[str, str], expected: str, command: str
) -> None:
    result = subprocess.run(
        trustcard_cmd(command),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trustcard: invalid configuration: ")
    assert expected in lines[0]


def _descendants(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def _start_dev(tmp_path: Path) -> tuple[Proc, int]:
    """`trustcard dev` on a free port with its data under tmp_path."""
    port = free_port()
    dev = Proc(
        "dev",
        trustcard_cmd("dev", "--port", str(port), "--data-dir", str(tmp_path / "data")),
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        tmp_path / "dev.log",
    ).start()
    return dev, port


def test_dev_runs_the_walkthrough_and_stops_everything(tmp_path: Path) -> None:
    dev, port = _start_dev(tmp_path)
    try:
        wait_until(lambda: "trustcard dev is up" in dev.log() or not dev.alive(), 90, what="dev")
        assert dev.alive(), dev.log()[-3000:]
        assert dev.process is not None

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            task_id = submit(client, "/tasks/test/add", x=5, y=3)
            wait_until(lambda: " ready." in dev.log(), 60, what="the worker")
            children = _descendants(dev.process.pid)
            assert len(children) >= 5  # redis, worker + 2 pool processes, API
            assert poll_until(client, task_id, {"completed"}, timeout=30)["result"] == 8
            assert client.get("/health").json()["status"] == "ok"

        second = subprocess.run(
            trustcard_cmd("dev", "--port", str(port), "--data-dir", str(tmp_path / "other")),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert f"port {port} on 127.0.0.1 is taken" in second.stderr
        assert not (tmp_path / "other" / "redis").exists()

        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(30) == 0
        assert "stopped API, worker and Redis" in dev.log()
        wait_until(
            lambda: not any(psutil.pid_exists(pid) and _running(pid) for pid in children),
            10,
            what="children to exit",
        )
    finally:
        # Graceful first: the supervisor stops its children; SIGKILL only as a last resort.
        dev.stop(signal.SIGINT, timeout=30)


def test_dev_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    dev, _ = _start_dev(tmp_path)
    try:
        wait_until(lambda: " ready." in dev.log() or not dev.alive(), 90, what="dev")
        assert dev.process is not None
        assert dev.alive(), dev.log()[-3000:]
        children = _descendants(dev.process.pid)
        assert len(children) >= 3
        dev.process.kill()
        dev.process.wait()
        wait_until(lambda: not any(_running(pid) for pid in children), 20, what="orphans to exit")
    finally:
        dev.stop(signal.SIGINT, timeout=30)


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_module_entry_point_shows_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trustcard", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("api", "worker", "dev"):
        assert command in result.stdout
