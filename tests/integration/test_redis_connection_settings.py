"""Dead-connection bounds, read back from live objects and live sockets, not from our config.

Celery 5.7's Redis result backend ignores `result_backend_transport_options` for its socket
settings (celery/backends/redis.py:519-523 reads `redis_socket_timeout` and friends), which
left a worker in `recv` on a result write for 120 s behind a black hole. These tests look at
what the running code really uses: the backend's redis-py pool, the broker channel's pool, the
options on their sockets, and the keepalive timers the kernel shows for a running worker's
connections (`ss -o`).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import Worker, start_worker, stop_quietly, wait_all, worker_less_stack
from tests.stack import ServiceStack, submit, wait_until
from trustcard.celery_app import create_celery_app
from trustcard.config import Settings
from trustcard.local.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# What docs/reliability.md ("Outages in every worker state") promises.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
HEALTH_CHECK = 10
KEEPALIVE = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(data_dir=tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def assert_live_socket(sock: socket.socket, keepalive_options: bool) -> None:
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.gettimeout() == SOCKET_TIMEOUT
    if keepalive_options:
        for option, wanted in KEEPALIVE.items():
            assert sock.getsockopt(socket.IPPROTO_TCP, option) == wanted


def test_result_backend_uses_the_bounds(redis_server: RedisServer) -> None:
    app = create_celery_app(
        Settings(REDIS_URL=redis_server.url(0), RESULT_BACKEND_URL=redis_server.url(1))
    )
    params: dict[str, Any] = app.backend.connparams
    print("result backend connparams:", params)
    assert params["socket_timeout"] == SOCKET_TIMEOUT
    assert params["socket_connect_timeout"] == CONNECT_TIMEOUT
    assert params["socket_keepalive"] is True
    assert params["health_check_interval"] == HEALTH_CHECK
    client = app.backend.client
    assert client.ping()
    connection = client.connection_pool.get_connection()
    try:
        assert connection.socket_connect_timeout == CONNECT_TIMEOUT
        assert connection.health_check_interval == HEALTH_CHECK
        # Celery passes no keepalive options for the backend: the kernel's intervals apply,
        # and the 5 s socket timeout is what bounds a read from a silent peer.
        assert_live_socket(connection._sock, keepalive_options=False)
    finally:
        client.connection_pool.release(connection)


def test_broker_channel_uses_the_bounds(redis_server: RedisServer) -> None:
    app = create_celery_app(
        Settings(REDIS_URL=redis_server.url(0), RESULT_BACKEND_URL=redis_server.url(1))
    )
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        kwargs = channel.pool.connection_kwargs
        print(
            "broker channel pool kwargs:", {k: kwargs[k] for k in sorted(kwargs) if "pass" not in k}
        )
        assert kwargs["socket_timeout"] == SOCKET_TIMEOUT
        assert kwargs["socket_connect_timeout"] == CONNECT_TIMEOUT
        assert kwargs["health_check_interval"] == HEALTH_CHECK
        pooled = channel.pool.get_connection()
        try:
            assert_live_socket(pooled._sock, keepalive_options=True)
        finally:
            channel.pool.release(pooled)


def test_transport_options_alone_are_not_read_by_celery(redis_server: RedisServer) -> None:
    """The upstream defect this works around: these options never reach the backend."""
    from celery import Celery

    app = Celery(
        "plain",
        broker=redis_server.url(0),
        backend=redis_server.url(1),
        result_backend_transport_options={"socket_timeout": 5, "socket_connect_timeout": 2},
    )
    params = app.backend.connparams
    assert params["socket_timeout"] == 120.0
    assert params["socket_connect_timeout"] is None


# ss -o (iproute2 print_ms_timer): "4min44sec", "29sec", "9.684ms" (9 s 684 ms), "176ms".
KEEPALIVE_TIMER = re.compile(
    r"timer:\(keepalive,(?:(?P<min>\d+)min)?(?:(?P<sec>\d+)(?:sec|\.))?(?:(?P<ms>\d+)ms)?,"
)


def _worker_connections(stack: ServiceStack, worker: Worker) -> list[tuple[int, float | None]]:
    """(pid, seconds left on the keepalive timer) per worker socket to Redis.

    A socket shows its keepalive timer only while nothing is in flight (ss then prints the
    retransmit timer, or none), and the broker's consumer sends a pop every ~100 ms when idle
    (redis_clients/reliable_pop.py): so sockets are sampled for up to 10 s and each one counts
    once seen with its keepalive timer; one never seen with it comes back as None."""
    seen: dict[str, tuple[int, float | None]] = {}
    deadline = time.monotonic() + 10
    while True:
        for key, pid, seconds in _sample_connections(stack, worker):
            if seen.get(key, (pid, None))[1] is None:
                seen[key] = (pid, seconds)
        if seen and all(seconds is not None for _, seconds in seen.values()):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return list(seen.values())


def _sample_connections(stack: ServiceStack, worker: Worker) -> list[tuple[str, int, float | None]]:
    """(local address, pid, keepalive seconds or None) per worker socket to Redis, one ss run."""
    assert stack.redis is not None
    ss = shutil.which("ss")
    assert ss, "ss (iproute2) is needed to read the worker's socket timers"
    out = subprocess.run(
        [ss, "-tnpoH", "state", "established", "dport", "=", f":{stack.redis.port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    group = {worker.pid, *_children(worker.pid)}
    found = []
    for line in out.splitlines():
        pid_match = re.search(r"pid=(\d+)", line)
        if not pid_match or int(pid_match[1]) not in group:
            continue
        timer = KEEPALIVE_TIMER.search(line)
        seconds = None
        if timer:
            parts = {key: int(value or 0) for key, value in timer.groupdict().items()}
            seconds = parts["min"] * 60 + parts["sec"] + parts["ms"] / 1000
        print("worker socket:", line.split("users:")[-1].strip())
        local = line.split()[2] if len(line.split()) > 2 else line
        found.append((local, int(pid_match[1]), seconds))
    return found


def _children(pid: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def test_a_running_workers_redis_sockets_have_keepalive(tmp_path: Path) -> None:
    with worker_less_stack(tmp_path) as stack:
        worker = start_worker(stack, "worker")
        try:
            with stack.client() as client:
                # A task makes the pool child open its result-backend connection too.
                task_id = submit(client, "/tasks/test/add", x=1, y=2)
                wait_all(client, [task_id], {"completed"}, timeout=30)
            connections = wait_until(
                lambda: _worker_connections(stack, worker), 10, what="worker sockets"
            )
            print("worker sockets to Redis (pid, keepalive timer s):", connections)
            pids = {pid for pid, _ in connections}
            # The main process (broker) and a pool child (results) both hold connections.
            assert worker.pid in pids
            assert len(pids) >= 2
            # Every one has a kernel keepalive timer; the broker's fires within 10 s of idle.
            assert all(seconds is not None for _, seconds in connections), connections
            broker_timers = [s for pid, s in connections if pid == worker.pid and s is not None]
            assert broker_timers
            assert min(broker_timers) <= KEEPALIVE[socket.TCP_KEEPIDLE]
        finally:
            stop_quietly(worker)
