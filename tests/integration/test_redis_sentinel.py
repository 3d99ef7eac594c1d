"""Redis Sentinel with real processes: 3 redis-server (AOF) + 3 Sentinels (tests/sentinel_set.py).

The API and a worker find the master through the Sentinels only (REDIS_URL's host does not
exist); the outage bounds are read back from the live objects; the master is SIGKILLed in the
middle of a burst of submissions, and separately handed over with SENTINEL FAILOVER.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel

from tests.faults import figures, successes, wait_all
from tests.metrics_text import scrape, value
from tests.sentinel_set import MASTER_NAME, Node, SentinelSet
from tests.stack import Proc, ServiceStack, submit, trustcard_cmd, wait_until
from trustcard.api.resources import redis_client
from trustcard.celery_app import create_celery_app
from trustcard.config import Settings
from trustcard.local.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PASSWORD, SENTINEL_PASSWORD = "node-secret", "sentinel-secret"
# What docs/reliability.md promises for every Redis connection (celery_app.celery_config).
SOCKET_TIMEOUT, CONNECT_TIMEOUT, HEALTH_CHECK = 5.0, 2.0, 10
START_BOUND_SECONDS = 20


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """A set of its own, for a test that kills or fails over its master."""
    nodes = SentinelSet(tmp_path / "sentinel-set", PASSWORD, SENTINEL_PASSWORD).start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def shared_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """One set for the tests that leave it as they found it."""
    root = tmp_path_factory.mktemp("sentinel")
    nodes = SentinelSet(root / "sentinel-set", PASSWORD, SENTINEL_PASSWORD).start()
    try:
        yield nodes
    finally:
        nodes.stop()


def sentinel_env(nodes: SentinelSet, **overrides: str) -> dict[str, str]:
    """The settings the chart renders for external Sentinel: URLs without a real host."""
    return {
        "REDIS_URL": "redis://sentinel/0",
        "RESULT_BACKEND_URL": "redis://sentinel/1",
        "REDIS_PASSWORD": PASSWORD,
        "REDIS_SENTINEL_HOSTS": nodes.hosts,
        "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        **overrides,
    }


def sentinel_settings(nodes: SentinelSet) -> Settings:
    return Settings.model_validate(sentinel_env(nodes))


# -- the effective options, read from live objects -------------------------------------------


def test_result_backend_through_sentinel_keeps_the_bounds(shared_set: SentinelSet) -> None:
    app = create_celery_app(sentinel_settings(shared_set))
    backend = app.backend
    assert type(backend).__name__ == "TrustcardSentinelBackend"
    client = backend.client
    assert client.set("probe", "1")
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == MASTER_NAME
    connection = pool.get_connection()
    try:
        # On the master the Sentinels named, with the backend's bounds.
        assert connection.port == shared_set.master().port
        assert connection.socket_timeout == SOCKET_TIMEOUT
        assert connection.socket_connect_timeout == CONNECT_TIMEOUT
        assert connection.health_check_interval == HEALTH_CHECK
        assert connection.db == 1
        sock = connection._sock
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    finally:
        pool.release(connection)
    # The connections to the Sentinels themselves: bounded too (Celery passes `{}` for them).
    for sentinel in pool.sentinel_manager.sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == SOCKET_TIMEOUT
        assert kwargs["socket_connect_timeout"] == CONNECT_TIMEOUT
        assert kwargs["socket_keepalive"] is True
        assert kwargs["password"] == SENTINEL_PASSWORD


def test_broker_channel_through_sentinel_keeps_the_bounds(shared_set: SentinelSet) -> None:
    app = create_celery_app(sentinel_settings(shared_set))
    with app.connection_for_read() as connection:
        assert connection.transport_cls == "sentinel"
        assert type(connection.transport).__name__ == "SentinelTransport"
        channel: Any = connection.default_channel
        assert type(channel).__name__ == "OutOfMemoryTolerantSentinelChannel"
        pool = channel.pool
        assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
        kwargs = pool.connection_kwargs
        assert kwargs["socket_timeout"] == SOCKET_TIMEOUT
        assert kwargs["socket_connect_timeout"] == CONNECT_TIMEOUT
        assert kwargs["health_check_interval"] == HEALTH_CHECK
        assert kwargs["db"] == 0
        pooled = pool.get_connection()
        try:
            assert pooled.port == shared_set.master().port
            sock = pooled._sock
            assert sock is not None
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert sock.gettimeout() == SOCKET_TIMEOUT
        finally:
            pool.release(pooled)
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel_kwargs = sentinel.connection_pool.connection_kwargs
            assert sentinel_kwargs["socket_timeout"] == SOCKET_TIMEOUT
            assert sentinel_kwargs["password"] == SENTINEL_PASSWORD


def test_api_clients_through_sentinel_keep_the_bounds(shared_set: SentinelSet) -> None:
    settings = sentinel_settings(shared_set)

    async def check() -> None:
        client = redis_client(settings, settings.broker_url, settings.REDIS_TIMEOUT_SECONDS, 7)
        try:
            assert await client.ping()
            pool = client.connection_pool
            assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
            assert pool.max_connections == 7
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                assert connection.port == shared_set.master().port
                assert connection.socket_timeout == settings.REDIS_TIMEOUT_SECONDS
                assert connection.health_check_interval == HEALTH_CHECK
                # The asyncio Retry (issue 14.5), one reconnect.
                assert isinstance(connection.retry, redis.asyncio.retry.Retry)
            finally:
                await pool.release(connection)
            for sentinel in pool.sentinel_manager.sentinels:
                kwargs = sentinel.connection_pool.connection_kwargs
                assert kwargs["socket_timeout"] == settings.REDIS_TIMEOUT_SECONDS
                assert kwargs["password"] == SENTINEL_PASSWORD
        finally:
            await client.aclose()

    asyncio.run(check())


# -- the exporter and the eviction check read the master ---------------------------------


def test_exporter_and_eviction_check_read_the_master(
    tmp_path: Path, shared_set: SentinelSet
) -> None:
    master = shared_set.master()
    admin = shared_set.node_client(master)
    stack = ServiceStack(tmp_path, with_worker=False, env_overrides=sentinel_env(shared_set))
    exporter_port = free_port()
    exporter = Proc(
        "exporter",
        trustcard_cmd("exporter", "--port", str(exporter_port)),
        {**os.environ, **sentinel_env(shared_set)},
        tmp_path / "exporter.log",
    )
    try:
        stack.start()
        exporter.start()
        with stack.client() as client:
            ids = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(3)]
            assert ids

            def depth() -> float | None:
                assert exporter.alive(), exporter.log()
                try:
                    samples = scrape(f"http://127.0.0.1:{exporter_port}/metrics")
                except httpx.HTTPError:
                    return None
                return value(samples, "trustcard_queue_depth", queue="analysis")

            # Queued on the master the Sentinels name; the exporter found it the same way.
            assert wait_until(depth, 30, what="the exporter to read the queue") == 3

            # Only the master turns evicting: the API's probe and the worker read that one.
            admin.config_set("maxmemory-policy", "allkeys-lru")
            ready = client.get("/health/ready")
            assert ready.status_code == 503, ready.text
            broker = client.get("/health/detail").json()["dependencies"]["broker"]
            assert broker["maxmemory_policy"] == "allkeys-lru"
            worker = Proc(
                "worker",
                trustcard_cmd("worker", "--concurrency", "1", "--without-mingle"),
                {**stack.env(), "WORKER_METRICS_PORT": "0"},
                tmp_path / "worker.log",
            ).start()
            try:
                wait_until(lambda: " ready." in worker.log() or not worker.alive(), 60)
                assert "maxmemory-policy allkeys-lru" in worker.log()
                # And it drains the queue through the Sentinels.
                wait_all(client, ids, {"completed"}, timeout=30)
            finally:
                worker.stop()
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.close()
        exporter.stop()
        stack.stop()


def test_a_master_without_enough_replicas_stops_submissions_not_the_worker(
    tmp_path: Path, shared_set: SentinelSet
) -> None:
    """min-replicas-to-write unmet: every write is refused with NOREPLICAS (BRPOP included).

    The worker exited on it (`Unrecoverable error: server:ResponseError`); now it waits as for
    a lost connection and drains the queue once the master accepts writes again.
    """
    admin = shared_set.node_client(shared_set.master())
    stack = ServiceStack(tmp_path, env_overrides=sentinel_env(shared_set))
    try:
        stack.start()
        assert stack.worker is not None
        with stack.client() as client:
            before = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(3)]
            wait_all(client, before, {"completed"}, timeout=30)
            admin.config_set("min-replicas-to-write", 3)  # two replicas: never met
            refused = client.post("/tasks/test/add", params={"x": 1, "y": 1})
            assert refused.status_code == 503, refused.text
            assert "NOREPLICAS" in refused.json()["detail"]
            assert client.get("/health/ready").status_code == 503
            time.sleep(5)  # the worker's BRPOPs are refused meanwhile
            assert stack.worker.alive(), stack.worker.log()[-3000:]
            admin.config_set("min-replicas-to-write", 0)
            after = wait_until(
                lambda: _accepted(client), 30, interval=0.2, what="submissions to be accepted"
            )
            wait_all(client, [after], {"completed"}, timeout=60)
        assert stack.worker.alive()
        assert "Unrecoverable error" not in stack.worker.log()
    finally:
        admin.config_set("min-replicas-to-write", 0)
        admin.close()
        stack.stop()


def _accepted(client: httpx.Client) -> str | None:
    response = client.post("/tasks/test/add", params={"x": 2, "y": 2})
    return str(response.json()["task_id"]) if response.status_code == 202 else None


# -- start-up check ---------------------------------------------------------------------------


def _run(command: str, env: dict[str, str], tmp_path: Path) -> tuple[int, str, float]:
    args = {"api": ["api", "--port", str(free_port())], "exporter": ["exporter", "--port", "0"]}
    full_env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'never-used.db'}",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    started = time.monotonic()
    result = subprocess.run(
        trustcard_cmd(*args.get(command, [command])),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=START_BOUND_SECONDS * 3,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong master name", "REDIS_SENTINEL_MASTER_NAME: no Sentinel monitors a master named"),
        ("no Sentinel reachable", "REDIS_SENTINEL_HOSTS: no Sentinel reachable"),
        ("wrong Sentinel password", "REDIS_SENTINEL_PASSWORD: Sentinel"),
        ("wrong master password", "refused the credentials"),
    ],
)
@pytest.mark.parametrize("command", ["api", "worker", "exporter"])
def test_sentinel_misconfiguration_ends_start_in_one_line(
    command: str, case: str, expected: str, tmp_path: Path, shared_set: SentinelSet
) -> None:
    overrides = {
        "wrong master name": {"REDIS_SENTINEL_MASTER_NAME": "not-" + MASTER_NAME},
        "no Sentinel reachable": {
            "REDIS_SENTINEL_HOSTS": f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
        },
        "wrong Sentinel password": {"REDIS_SENTINEL_PASSWORD": "wrong"},
        "wrong master password": {"REDIS_PASSWORD": "wrong"},
    }[case]
    code, output, seconds = _run(command, sentinel_env(shared_set, **overrides), tmp_path)
    print(f"{command}, {case}: exit {code} after {seconds:.1f} s: {output.strip()}")
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("trustcard: "), output
    assert expected in lines[0], output
    assert seconds < START_BOUND_SECONDS


# -- failover with the API and a worker running -----------------------------------------------


@dataclass
class Burst:
    """Submissions from a thread: who got 202, who 503 (and what it named), and when."""

    client: httpx.Client
    started: float = field(default_factory=time.monotonic)
    accepted: list[str] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    refused: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, total: int, sleep_every: int = 10) -> None:
        index = 0
        while len(self.accepted) < total and not self.stop.is_set():
            if index % sleep_every == 0:
                path, params = "/tasks/test/sleep", {"seconds": 0.3}
            else:
                path, params = "/tasks/test/add", {"x": index, "y": 1}
            index += 1
            try:
                response = self.client.post(path, params=params)
            except httpx.HTTPError as exc:
                self.refused.append((time.monotonic(), 0, {"detail": repr(exc)}))
                continue
            if response.status_code == 202:
                self.accepted.append(response.json()["task_id"])
                self.accepted_at.append(time.monotonic())
            else:
                self.refused.append((time.monotonic(), response.status_code, response.json()))
                time.sleep(0.05)


GRACEFUL_LOSS = (
    "known loss, docs/redis-sentinel.md: after SENTINEL FAILOVER the old master keeps taking "
    "writes on the clients' open connections until Sentinel demotes it (seconds later); it "
    "then resyncs from the new master and drops them (202'd tasks answer 404, some run twice)"
)


def _stack(tmp_path: Path, nodes: SentinelSet) -> ServiceStack:
    # The stack's own Redis is left unused: every client finds the master through the Sentinels.
    return ServiceStack(tmp_path / "stack", env_overrides=sentinel_env(nodes)).start()


def _unknown_outcomes(client: httpx.Client, burst: Burst) -> Counter[str]:
    """Final statuses of submissions answered 503 with a task id (outcome unknown)."""
    statuses: Counter[str] = Counter()
    for _, _, body in burst.refused:
        task_id = body.get("task_id")
        if task_id:
            response = client.get(f"/tasks/{task_id}")
            statuses[str(response.json().get("status", response.status_code))] += 1
    return statuses


def _final_statuses(client: httpx.Client, ids: list[str], timeout: float) -> Counter[str]:
    """Each id's status once all are finished, or at the timeout (a 404 counts as `404`)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses: Counter[str] = Counter()
        for task_id in ids:
            response = client.get(f"/tasks/{task_id}")
            status = response.json().get("status") if response.status_code == 200 else None
            statuses[str(status or response.status_code)] += 1
        if set(statuses) <= {"completed", "failed", "404"} or time.monotonic() > deadline:
            return statuses
        time.sleep(1)


def _in_flight_and_lag(nodes: SentinelSet, master: Node) -> tuple[int, int]:
    """Tasks delivered and not acked (running or reserved), and the replicas' acked lag.

    Bytes of the replication stream the replicas have not acknowledged: an upper bound of
    what an abrupt master loss could take with it (Redis replicates asynchronously; replicas
    acknowledge once a second, so most of it has usually arrived).
    """
    with nodes.node_client(master) as client:
        in_flight = int(client.hlen("unacked"))
        info = client.info("replication")
    offsets = [
        v["offset"] for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
    ]
    lag = int(info["master_repl_offset"]) - max(offsets) if offsets else -1
    return in_flight, lag


def _run_failover(
    tmp_path: Path, nodes: SentinelSet, case: str, fault: str, total: int = 400
) -> None:
    stack = _stack(tmp_path, nodes)
    try:
        assert stack.worker is not None
        worker = stack.worker
        with stack.client() as client, stack.client() as submitter:
            burst = Burst(submitter)
            thread = threading.Thread(target=burst.run, args=(total,), daemon=True)
            thread.start()
            # Mid-burst, with tasks queued and two running.
            while len(burst.accepted) < total // 3 and thread.is_alive():
                time.sleep(0.01)
            master = nodes.master()
            old_port = master.port
            in_flight, lag = _in_flight_and_lag(nodes, master)
            fault_at = time.monotonic()
            if fault == "kill":
                nodes.kill_master()
            elif fault == "sigterm":
                # A pod's rolling restart: Redis >= 7 lets lagging replicas catch up first.
                master.kill(signal.SIGTERM)
            else:
                nodes.failover()
            failover_seconds = nodes.wait_new_master(old_port)
            thread.join(timeout=120)
            assert not thread.is_alive(), "submissions did not finish"
            statuses = _final_statuses(client, burst.accepted, timeout=60)
            unknown = _unknown_outcomes(client, burst)
        ran = successes([worker.log()], "test.add") + successes([worker.log()], "test.sleep")
        lost = [task_id for task_id in burst.accepted if ran[task_id] == 0]
        duplicated = sum(1 for task_id in burst.accepted if ran[task_id] > 1)
        refused_at = [t for t, _, _ in burst.refused]
        window = (max(refused_at) - fault_at) if refused_at else 0.0
        # From the fault to the first 202 after the last 503: how long submitting was refused.
        after_window = [t for t in burst.accepted_at if t > fault_at + window]
        recovered = after_window[0] - fault_at if after_window else float("nan")
        figures(
            case,
            sent=len(burst.accepted),
            completed=statuses["completed"],
            failed=statuses["failed"],
            lost=len(lost),
            statuses=dict(statuses),
            duplicated=duplicated,
            refused_503=len(burst.refused),
            in_flight_at_fault=in_flight,
            replica_unacked_bytes_at_fault=lag,
            unknown_outcome=dict(unknown),
            sentinel_failover_seconds=failover_seconds,
            recovery_seconds=recovered,
            last_503_after_seconds=window,
        )
        # Every answer other than 202 was a 503 naming a Redis dependency, within the switch.
        for _, status, body in burst.refused:
            assert status == 503, body
            assert body["dependency"] in ("broker", "result backend"), body
            assert "unavailable" in body["detail"], body
        assert window < failover_seconds + 15, (window, failover_seconds)
        # Every 202'd task ran and succeeded; the worker survived without a restart. kombu's
        # BRPOP window (docs/upstream-redis-outages.md, section 6) lost the message popped as
        # the master died (999 of 1,000 once); our pop script stores its unacked copy in the
        # same step, so a kill takes none.
        brpop_window = 0
        assert statuses["completed"] >= len(burst.accepted) - brpop_window, statuses
        assert statuses["completed"] + statuses["pending"] == len(burst.accepted), statuses
        assert len(lost) <= brpop_window, lost[:5]
        assert worker.alive(), worker.log()[-3000:]
        assert "Unrecoverable error" not in worker.log()
        with stack.client() as client:
            assert client.get("/health/ready").status_code == 200
    finally:
        stack.stop()


def test_master_killed_mid_burst(tmp_path: Path, sentinel_set: SentinelSet) -> None:
    _run_failover(tmp_path, sentinel_set, "sentinel: master SIGKILLed mid-burst", "kill", 1000)


def test_master_killed_mid_burst_with_min_replicas_to_write(tmp_path: Path) -> None:
    """The recommended production setting: a master with no current replica takes no writes."""
    nodes = SentinelSet(
        tmp_path / "sentinel-set",
        PASSWORD,
        SENTINEL_PASSWORD,
        node_args=["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"],
    ).start()
    try:
        _run_failover(
            tmp_path, nodes, "sentinel: master SIGKILLed mid-burst, min-replicas-to-write 1", "kill"
        )
    finally:
        nodes.stop()


@pytest.mark.xfail(
    reason="known, docs/redis-sentinel.md: 1 of 400 202'd tasks never ran in one run (kombu pops "
    "with BRPOP and writes its unacked copy after: a message popped as Redis stops is lost, "
    "docs/upstream-redis-outages.md section 6), 369 ran twice in another",
    strict=False,
)
def test_master_stopped_mid_burst(tmp_path: Path, sentinel_set: SentinelSet) -> None:
    """SIGTERM (what Kubernetes sends on a rolling restart or a drain), then Sentinel fails over."""
    _run_failover(tmp_path, sentinel_set, "sentinel: master SIGTERMed mid-burst", "sigterm")


@pytest.mark.xfail(reason=GRACEFUL_LOSS, strict=False)
def test_graceful_failover_mid_burst_with_min_replicas_to_write(tmp_path: Path) -> None:
    """SENTINEL FAILOVER does not stop the old master from taking writes until it is demoted;
    with min-replicas-to-write it refuses them (NOREPLICAS) once its replicas have left."""
    nodes = SentinelSet(
        tmp_path / "sentinel-set",
        PASSWORD,
        SENTINEL_PASSWORD,
        node_args=["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"],
    ).start()
    try:
        _run_failover(
            tmp_path,
            nodes,
            "sentinel: SENTINEL FAILOVER mid-burst, min-replicas-to-write 1",
            "failover",
        )
    finally:
        nodes.stop()


@pytest.mark.xfail(reason=GRACEFUL_LOSS, strict=False)
def test_graceful_failover_mid_burst(tmp_path: Path, sentinel_set: SentinelSet) -> None:
    _run_failover(tmp_path, sentinel_set, "sentinel: SENTINEL FAILOVER mid-burst", "failover")
