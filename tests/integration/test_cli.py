"""The CLI as a user runs it: config errors, `trustcard dev` end to end, two devs at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from tests.stack import Proc, poll_until, submit, trustcard_cmd, wait_until
from trustcard.local.redis_server import free_port


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


def _start_dev(
    tmp_path: Path, port: int | None = None, *extra: str, log: str = "dev.log"
) -> tuple[Proc, int]:
    """`trustcard dev` on a free port with its data under tmp_path."""
    port = port or free_port()
    dev = Proc(
        "dev",
        trustcard_cmd("dev", "--port", str(port), "--data-dir", str(tmp_path / "data"), *extra),
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        tmp_path / log,
    ).start()
    return dev, port


def _wait_up(dev: Proc) -> None:
    wait_until(lambda: "trustcard dev is up" in dev.log() or not dev.alive(), 90, what="dev")
    assert dev.alive(), dev.log()[-3000:]


def _worker_ready(dev: Proc) -> bool:
    return " ready." in dev.log() or not dev.alive()


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
        assert not (tmp_path / "other").exists()

        # Each process's lines carry its name.
        lines = dev.log().splitlines()
        assert any(line.startswith("api    | ") and "Uvicorn running" in line for line in lines)
        assert any(line.startswith("worker | ") and " ready." in line for line in lines)
        assert any(line.startswith("redis  | ") and "Ready to accept" in line for line in lines)
        assert not any(" ready." in line and not line.startswith("worker | ") for line in lines)

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


def _stop_dev_and_wait(dev: Proc, timeout: float = 30) -> float:
    assert dev.process is not None
    started = time.monotonic()
    dev.process.send_signal(signal.SIGINT)
    dev.process.wait(timeout)
    return time.monotonic() - started


def _rerun_after(client: httpx.Client, task_id: str, restarted: datetime) -> dict[str, object]:
    """The task's view once it runs again (a run that began after `restarted`)."""

    def rerun() -> dict[str, object] | None:
        body = client.get(f"/tasks/{task_id}").json()
        progress = body.get("progress") or {}
        started = progress.get("started_at")
        # `pending` until the worker takes it (then STARTED, then progress): never the
        # cut-off run, whose progress has an earlier started_at.
        assert body["status"] in {"pending", "processing"}, body
        assert not started or datetime.fromisoformat(started) >= restarted, body
        return dict(body) if started else None

    # A few seconds: the worker takes the requeued message as soon as it is ready.
    return dict(wait_until(rerun, 15, interval=0.2, what="the task to run again"))


# 4 s x 5 stages: longer than the 15 s the old supervisor waited before SIGKILL.
LONG_STAGE_SECONDS = 4


def test_ctrl_c_requeues_a_running_task_and_the_next_start_runs_it(tmp_path: Path) -> None:
    dev, port = _start_dev(tmp_path, None, "--concurrency", "1")
    again: Proc | None = None
    try:
        wait_until(lambda: _worker_ready(dev), 90, what="the worker")
        assert dev.alive(), dev.log()[-3000:]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            task_id = submit(client, "/tasks/test/long", stage_seconds=LONG_STAGE_SECONDS)
            poll_until(client, task_id, {"processing"}, timeout=30)

        stop_seconds = _stop_dev_and_wait(dev)
        assert dev.process is not None
        assert dev.process.returncode == 0, dev.log()[-3000:]
        # Bounded by the 3 s soft shutdown, not by the task (20 s) or the old 15 s kill.
        assert stop_seconds < 12, stop_seconds
        assert "Initiating Soft Shutdown, terminating in 3.0 seconds" in dev.log()
        assert "Restoring 1 unacknowledged message(s)" in dev.log()

        restarted = datetime.now().astimezone()
        again, _ = _start_dev(tmp_path, port, "--concurrency", "1", log="again.log")
        wait_until(
            lambda: "trustcard dev is up" in again.log() or not again.alive(), 90, what="dev"
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            # Seconds after the start, the task runs again (a fresh started_at), rather than
            # showing the cut-off run as `processing` until the 10 min visibility timeout.
            body = _rerun_after(client, task_id, restarted)
            assert body["status"] == "processing"
            done = poll_until(client, task_id, {"completed"}, timeout=60)
        assert len(done["result"]["stages"]) == 5
    finally:
        dev.stop(signal.SIGINT, timeout=30)
        if again is not None:
            again.stop(signal.SIGINT, timeout=30)


def test_second_ctrl_c_kills_at_once_and_the_next_start_requeues(tmp_path: Path) -> None:
    dev, port = _start_dev(tmp_path, None, "--concurrency", "1")
    again: Proc | None = None
    try:
        wait_until(lambda: _worker_ready(dev), 90, what="the worker")
        assert dev.process is not None
        assert dev.alive(), dev.log()[-3000:]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            task_id = submit(client, "/tasks/test/long", stage_seconds=LONG_STAGE_SECONDS)
            poll_until(client, task_id, {"processing"}, timeout=30)
        children = _descendants(dev.process.pid)

        started = time.monotonic()
        dev.process.send_signal(signal.SIGINT)
        wait_until(lambda: "Ctrl-C again" in dev.log(), 5, what="the first stop line")
        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(5) == 130
        assert time.monotonic() - started < 5
        said = [line for line in dev.log().splitlines() if "second Ctrl-C" in line]
        assert said == ["trustcard dev: second Ctrl-C: killed API, worker and Redis at once"]
        wait_until(lambda: not any(_running(pid) for pid in children), 5, what="children")

        # The worker died holding the task; the next start queues it again at once.
        restarted = datetime.now().astimezone()
        again, _ = _start_dev(tmp_path, port, "--concurrency", "1", log="again.log")
        wait_until(
            lambda: "trustcard dev is up" in again.log() or not again.alive(), 90, what="dev"
        )
        assert "1 task(s) cut off at the last stop are queued again" in again.log()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            _rerun_after(client, task_id, restarted)
    finally:
        dev.stop(signal.SIGINT, timeout=30)
        if again is not None:
            again.stop(signal.SIGINT, timeout=30)


def test_two_dev_stacks_keep_separate_state_directories(tmp_path: Path) -> None:
    first, first_port = _start_dev(tmp_path, None, "--concurrency", "1", log="first.log")
    second: Proc | None = None
    third: subprocess.CompletedProcess[str] | None = None
    try:
        second, second_port = _start_dev(tmp_path, None, "--concurrency", "1", log="second.log")
        for dev in (first, second):
            _wait_up(dev)
        states = [tmp_path / "data" / str(port) for port in (first_port, second_port)]
        infos = [json.loads((state / "dev.json").read_text()) for state in states]
        assert infos[0]["redis_url"] != infos[1]["redis_url"]
        assert infos[0]["database_url"] != infos[1]["database_url"]
        for state, info in zip(states, infos, strict=True):
            assert info["database_url"] == f"sqlite:///{(state / 'trustcard.db').resolve()}"
            assert list((state / "redis").glob("appendonly*"))

        # Same port on another loopback address: the port is free there, the directory is not.
        third = subprocess.run(
            trustcard_cmd(
                "dev",
                "--host",
                "127.0.0.2",
                "--port",
                str(first_port),
                "--data-dir",
                str(tmp_path / "data"),
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert third.returncode == 1, third.stdout + third.stderr
        assert f"is in use by another `trustcard dev` (pid {infos[0]['pid']})" in third.stderr
    finally:
        first.stop(signal.SIGINT, timeout=30)
        if second is not None:
            second.stop(signal.SIGINT, timeout=30)


def test_claims_commands_beside_dev_use_its_database(tmp_path: Path) -> None:
    port = free_port()
    dev = Proc(
        "dev",
        trustcard_cmd("dev", "--port", str(port), "--concurrency", "1"),
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        tmp_path / "dev.log",
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    claims = tmp_path / "claims.json"
    claims.write_text(json.dumps([{"text": "The moon is cheese", "verdict": "false"}]))

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            trustcard_cmd(*args),
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        # dev runs in tmp_path with the default ./.trustcard
        assert dev.process is None
        with dev.log_path.open("ab") as log:
            dev.process = subprocess.Popen(
                dev.argv,
                env=dev.env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(lambda: "trustcard dev is up" in dev.log() or not dev.alive(), 90, what="dev")
        assert dev.alive(), dev.log()[-3000:]
        dev_db = tmp_path / ".trustcard" / str(port) / "trustcard.db"

        imported = run("claims", "import", str(claims))
        assert imported.returncode == 0, imported.stderr
        assert f"`trustcard dev` on port {port} (running)" in imported.stderr
        listed = run("claims", "list")
        assert listed.stdout.splitlines() == ["1\tfalse\tThe moon is cheese"]
        # It went into dev's database, not ./trustcard.db.
        assert not (tmp_path / "trustcard.db").exists()
        explicit = run("claims", "list", DATABASE_URL=f"sqlite:///{dev_db}")
        assert explicit.stdout == listed.stdout
        assert "trustcard dev" not in explicit.stderr
        # An explicit DATABASE_URL still wins.
        other = run("db", "current", DATABASE_URL=f"sqlite:///{tmp_path / 'other.db'}")
        assert "trustcard dev" not in other.stderr
        assert (tmp_path / "other.db").exists()
    finally:
        dev.stop(signal.SIGINT, timeout=30)
