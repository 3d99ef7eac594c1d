"""Redis Sentinel with real processes: 3 redis-server (AOF) + 3 Sentinels (tests/sentinel_set.py).

The API and a worker find the master through the Sentinels only (REDIS_URL's host does not
exist); the outage bounds are read back from the live objects; the master is SIGKILLed in the
middle of a burst of submissions, and separately handed over with SENTINEL FAILOVER.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel

from tests.faults import figures, successes, wait_all
from tests.metrics_text import scrape, value
from tests.netns import TestHosts, unavailable_reason
from tests.sentinel_set import MASTER_NAME, Node, SentinelSet
from tests.stack import Proc, ServiceStack, submit, trustcard_cmd, wait_until
from trustcard.api.resources import redis_client
from trustcard.celery_app import create_celery_app
from trustcard.config import Settings
from trustcard.local.redis_server import free_port
from trustcard.task_model.names import QUEUE
from trustcard.task_model.registry import record_key

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


def test_wait_replicas_unmet_answers_503_with_the_id(
    tmp_path: Path, shared_set: SentinelSet
) -> None:
    """REDIS_WAIT_REPLICAS above the replicas there are: WAIT times out, 503 naming the broker,
    the id and `outcome: unknown` (the write is on the master: the task still runs)."""
    env = {"REDIS_WAIT_REPLICAS": "3", "REDIS_WAIT_TIMEOUT_MS": "200"}
    stack = ServiceStack(tmp_path, env_overrides=sentinel_env(shared_set, **env))
    try:
        stack.start()
        with stack.client() as client:
            ids = []
            # The first submission of a process takes the two-write path, later ones the script.
            for _ in range(3):
                started = time.monotonic()
                response = client.post("/tasks/test/add", params={"x": 1, "y": 2})
                took = time.monotonic() - started
                assert response.status_code == 503, response.text
                body = response.json()
                assert body["dependency"] == "broker", body
                assert body["outcome"] == "unknown", body
                assert "2 of 3 replicas acknowledged the write within 200 ms" in body["detail"]
                assert 0.2 <= took < 2, took
                ids.append(body["task_id"])
            wait_all(client, ids, {"completed"}, timeout=30)
    finally:
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


def _stack(tmp_path: Path, nodes: SentinelSet, **env: str) -> ServiceStack:
    # The stack's own Redis is left unused: every client finds the master through the Sentinels.
    return ServiceStack(tmp_path / "stack", env_overrides=sentinel_env(nodes, **env)).start()


def _unknown_outcomes(client: httpx.Client, burst: Burst) -> Counter[str]:
    """Final statuses of submissions answered 503 with a task id (outcome unknown)."""
    statuses: Counter[str] = Counter()
    for _, _, body in burst.refused:
        task_id = body.get("task_id")
        if task_id:
            response = client.get(f"/tasks/{task_id}")
            statuses[str(response.json().get("status", response.status_code))] += 1
    return statuses


def _final_statuses(
    client: httpx.Client, ids: list[str], timeout: float, per_id: dict[str, str] | None = None
) -> Counter[str]:
    """Each id's status once all are finished, or at the timeout (a 404 counts as `404`).

    `per_id`, when given, receives each id's last status.
    """
    deadline = time.monotonic() + timeout
    per_id = {} if per_id is None else per_id
    while True:
        statuses: Counter[str] = Counter()
        for task_id in ids:
            response = client.get(f"/tasks/{task_id}")
            status = response.json().get("status") if response.status_code == 200 else None
            per_id[task_id] = str(status or response.status_code)
            statuses[per_id[task_id]] += 1
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
    tmp_path: Path,
    nodes: SentinelSet,
    case: str,
    fault: str,
    total: int = 400,
    env: dict[str, str] | None = None,
    max_lost: int | None = None,
) -> None:
    """`fault`: kill, sigterm, failover, or partition (tests/netns.py hosts needed).

    `max_lost`: 202'd tasks allowed never to run (default 0).
    """
    stack = _stack(tmp_path, nodes, **(env or {}))
    extra: dict[str, Any] = {}
    try:
        assert stack.worker is not None
        worker = stack.worker
        if fault == "partition":
            extra.update(_wait_latency(tmp_path, stack, env or {}))
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
            fault_at, fault_wall = time.monotonic(), time.time()
            accepted_at_fault = len(burst.accepted)
            if fault == "kill":
                nodes.kill_master()
            elif fault == "sigterm":
                # A pod's rolling restart: Redis >= 7 lets lagging replicas catch up first.
                master.kill(signal.SIGTERM)
            elif fault == "partition":
                nodes.partition_master()
                cut_done = len(burst.accepted)  # 202s while the cut was being made count too
            else:
                nodes.failover()
            failover_seconds = nodes.wait_new_master(old_port)
            if fault == "partition":
                extra.update(_hold_and_heal(nodes, master, fault_at))
            thread.join(timeout=120)
            assert not thread.is_alive(), "submissions did not finish"
            final: dict[str, str] = {}
            statuses = _final_statuses(client, burst.accepted, timeout=60, per_id=final)
            unknown = _unknown_outcomes(client, burst)
        ran = successes([worker.log()], "test.add") + successes([worker.log()], "test.sleep")
        lost = [task_id for task_id in burst.accepted if ran[task_id] == 0]
        duplicated = sum(1 for task_id in burst.accepted if ran[task_id] > 1)
        refused_at = [t for t, _, _ in burst.refused]
        window = (max(refused_at) - fault_at) if refused_at else 0.0
        # From the fault to the first 202 after the last 503: how long submitting was refused.
        after_window = [t for t in burst.accepted_at if t > fault_at + window]
        recovered = after_window[0] - fault_at if after_window else float("nan")
        refused_after = sorted(t - fault_at for t in refused_at if t >= fault_at)
        if fault == "partition":
            # How long the clients took to notice the black hole (no RST comes).
            extra["api_first_503_after_seconds"] = refused_after[0] if refused_after else -1.0
            extra.update(_worker_noticed(worker.log(), fault_wall))
            # Ran (the effect happened) but its result never reached the surviving master.
            result_missing = [t for t, status in final.items() if ran[t] and status != "completed"]
            finished = _first_success(worker.log(), fault_wall)
            extra["ran_result_missing"] = len(result_missing)
            # Those whose result the worker wrote in the second around the cut: not replicated
            # (worker writes are not WAITed); see docs/redis-sentinel.md, partition.
            extra["ran_result_missing_near_fault"] = sum(
                1 for t in result_missing if abs(finished.get(t, 99.0)) <= RESULT_WINDOW_SECONDS
            )
            # Lost tasks by when they were accepted: just before the fault = not replicated yet.
            extra["lost_accepted_in_last_100_before_cut"] = sum(
                1 for t in lost if accepted_at_fault - 100 <= burst.accepted.index(t) < cut_done
            )
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
            **extra,
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
        # same step, so a kill takes none. `max_lost`: the partition without WAIT (see there).
        brpop_window = 0 if max_lost is None else max_lost
        # A partition may leave results of tasks that finished as it came unreplicated.
        unreplicated = extra.get("ran_result_missing_near_fault", 0)
        assert extra.get("ran_result_missing", 0) == unreplicated, extra
        assert statuses["completed"] >= len(burst.accepted) - brpop_window - unreplicated, statuses
        # A lost one: `pending` (the BRPOP window) or 404 (record and message never replicated).
        # An unreplicated result leaves the state before it: `processing` (STARTED) or `pending`.
        allowed = {"completed", "pending", "404"} | ({"processing"} if unreplicated else set())
        assert set(statuses) <= allowed, statuses
        if fault == "partition":
            assert len(lost) == extra["lost_accepted_in_last_100_before_cut"], lost[:5]
        assert len(lost) <= brpop_window, lost[:5]
        assert worker.alive(), worker.log()[-3000:]
        assert "Unrecoverable error" not in worker.log()
        with stack.client() as client:
            assert client.get("/health/ready").status_code == 200
    finally:
        stack.stop()


PARTITION_HOLD_SECONDS = 10  # isolated this long after the promotion, then healed


def _hold_and_heal(nodes: SentinelSet, old_master: Node, fault_at: float) -> dict[str, float]:
    """Keep the old master cut off a while after the promotion, heal, see it rejoin."""
    time.sleep(PARTITION_HOLD_SECONDS)
    # Isolated and alive: it still calls itself master (nothing reached it to say otherwise).
    assert old_master.alive()
    nodes.heal()
    healed_at = time.monotonic()
    deadline = healed_at + 60
    while nodes.role(old_master) != "slave":
        assert time.monotonic() < deadline, f"old master did not rejoin: {nodes.describe()}"
        time.sleep(0.1)
    rejoined = time.monotonic() - healed_at
    nodes.wait_replicas(2)
    return {
        "partitioned_seconds": healed_at - fault_at,
        "old_master_replica_after_heal_seconds": rejoined,
        "replicas_in_sync_after_heal_seconds": time.monotonic() - healed_at,
    }


# A result the worker wrote this close to the partition may not have reached a replica.
RESULT_WINDOW_SECONDS = 1.0


def _first_success(log: str, fault_wall: float) -> dict[str, float]:
    """Each task id's first `succeeded` log line, in seconds after the fault (negative: before)."""
    first: dict[str, float] = {}
    pattern = re.compile(
        r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d+).*?Task [\w.]+\[([0-9a-f-]{36})\] succeeded",
        re.MULTILINE,
    )
    for match in pattern.finditer(log):
        stamp = datetime.fromisoformat(f"{match.group(1)}.{match.group(2)}").timestamp()
        first.setdefault(match.group(3), stamp - fault_wall)
    return first


# What the worker logs when it finds a connection dead, by which of its clients.
WORKER_NOTICES = {
    "worker_result_write_failed_after_seconds": "Failed operation _store_result",
    "worker_brpop_dropped_after_seconds": "BRPOP got no reply",
    "worker_broker_lost_after_seconds": "Connection to broker lost",
}


def _worker_noticed(log: str, fault_wall: float) -> dict[str, float]:
    """Seconds from the fault to the worker's first log line of each kind (-1: none)."""
    noticed = dict.fromkeys(WORKER_NOTICES, -1.0)
    for line in log.splitlines():
        for key, text in WORKER_NOTICES.items():
            if text not in line or noticed[key] >= 0:
                continue
            match = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d+)", line)
            if match is None:
                continue
            stamp = datetime.fromisoformat(f"{match.group(1)}.{match.group(2)}")
            seconds = stamp.timestamp() - fault_wall
            if seconds >= 0:
                noticed[key] = seconds
    return noticed


def _wait_latency(tmp_path: Path, stack: ServiceStack, env: dict[str, str]) -> dict[str, float]:
    """Submission latency with and without WAIT, in this run: a second API with the other
    setting on the same set, 200 sequential submissions to each, interleaved by tens."""
    waits = env.get("REDIS_WAIT_REPLICAS", "0") != "0"
    port = free_port()
    other = Proc(
        "api-other",
        trustcard_cmd("api", "--port", str(port)),
        {**stack.env(), "REDIS_WAIT_REPLICAS": "0" if waits else "1"},
        tmp_path / "api-other.log",
    ).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), 30, what="the second API")
        timings: dict[bool, list[float]] = {waits: [], not waits: []}
        with stack.client() as own, httpx.Client(base_url=url, timeout=10) as second:
            for _ in range(20):
                for waited, client in ((waits, own), (not waits, second)):
                    for _ in range(10):
                        started = time.perf_counter()
                        response = client.post("/tasks/test/add", params={"x": 1, "y": 1})
                        timings[waited].append(time.perf_counter() - started)
                        assert response.status_code == 202, response.text
    finally:
        other.stop()
    with_wait = statistics.median(timings[True])
    without = statistics.median(timings[False])
    return {
        "submit_p50_ms_without_wait": without * 1000,
        "submit_p50_ms_with_wait": with_wait * 1000,
        "submit_p50_ratio_wait": with_wait / without,
    }


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# The chart's defaults (redis.sentinel.minReplicasToWrite / minReplicasMaxLag).
MIN_REPLICAS = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]


@contextlib.contextmanager
def _hosts_set(tmp_path: Path, node_args: list[str]) -> Iterator[SentinelSet]:
    """A set whose data nodes live on test hosts of their own (network namespaces)."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the partition tests: {reason}")
        pytest.skip(f"partition tests need network namespaces: {reason}")
    with TestHosts(3) as test_hosts:
        nodes = SentinelSet(
            tmp_path / "sentinel-set",
            PASSWORD,
            SENTINEL_PASSWORD,
            node_args=node_args,
            test_hosts=test_hosts,
        )
        try:
            yield nodes.start()
        finally:
            nodes.stop()


WAIT_ONE = {"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "500"}


@pytest.mark.timeout(360)
def test_master_partitioned_mid_burst_with_wait(tmp_path: Path) -> None:
    """The recommended setting (docs/redis-sentinel.md): every 202 was acknowledged by a
    replica (REDIS_WAIT_REPLICAS 1), and the old master refuses writes once cut off from its
    replicas (min-replicas-to-write 1): 0 lost, every result kept."""
    with _hosts_set(tmp_path, MIN_REPLICAS) as nodes:
        _run_failover(
            tmp_path,
            nodes,
            "sentinel: master partitioned mid-burst, WAIT 1, min-replicas-to-write 1",
            "partition",
            1000,
            env=WAIT_ONE,
            max_lost=0,
        )


@pytest.mark.timeout(360)
def test_master_partitioned_mid_burst_without_wait(tmp_path: Path) -> None:
    """Without WAIT a 202 means "on the master": what it had not sent to a replica when the
    partition came is lost by design of asynchronous replication (counted; only tasks
    accepted just before the partition may be among them)."""
    with _hosts_set(tmp_path, MIN_REPLICAS) as nodes:
        _run_failover(
            tmp_path,
            nodes,
            "sentinel: master partitioned mid-burst, no WAIT, min-replicas-to-write 1",
            "partition",
            1000,
            # Up to what the master took in its last second (replicas ack once a second).
            max_lost=100,
        )


STALE_CONNECTIONS = (
    "known, docs/redis-sentinel.md (partition): without min-replicas-to-write the old master "
    "takes writes again after the heal, from the worker's connections that sat idle through "
    "the partition (no timeout fired), until Sentinel demotes it ~10 s later; then it resyncs "
    "and drops them (42 of 1,000 results lost in the first run)"
)


@pytest.mark.xfail(reason=STALE_CONNECTIONS, strict=False)
@pytest.mark.timeout(360)
def test_master_partitioned_mid_burst_without_min_replicas(tmp_path: Path) -> None:
    with _hosts_set(tmp_path, []) as nodes:
        _run_failover(
            tmp_path,
            nodes,
            "sentinel: master partitioned mid-burst, WAIT 1, no min-replicas-to-write",
            "partition",
            1000,
            env=WAIT_ONE,
            max_lost=0,
        )


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


def test_graceful_failover_mid_burst_with_min_replicas_to_write(tmp_path: Path) -> None:
    """SENTINEL FAILOVER does not stop the old master from taking writes until it is demoted:
    the processes follow the switch themselves (redis_clients.sentinel_watch); the new master
    refuses writes (NOREPLICAS) until its other replica has resynced."""
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


@pytest.mark.xfail(
    reason="known, docs/redis-sentinel.md (planned switch): in 1 of ~12 runs (clean-clone CI, "
    "2026-12-04) the API logged +try-failover and its hold, yet kept answering 202 on its open "
    "connections to the old master (0 503s) until the switch: 144 of 400 records lost; not "
    "diagnosed",
    strict=False,
)
def test_graceful_failover_mid_burst(tmp_path: Path, sentinel_set: SentinelSet) -> None:
    """The old master kept taking writes on open connections until Sentinel demoted it and
    then flushed them (145-221 of 400 lost in half the runs); now nothing of ours goes there."""
    _run_failover(tmp_path, sentinel_set, "sentinel: SENTINEL FAILOVER mid-burst", "failover")


def test_submissions_after_a_switch_land_on_the_new_master(
    tmp_path: Path, sentinel_set: SentinelSet
) -> None:
    """The API's open connections follow +switch-master (redis_clients.sentinel_watch).

    They used to stay on the old master, which Sentinel demotes only seconds after the
    switch (then resyncs and flushes what it took): these submissions were answered 202,
    written to the old master and missing on the new one.
    """
    stack = ServiceStack(
        tmp_path / "stack", with_worker=False, env_overrides=sentinel_env(sentinel_set)
    )
    try:
        stack.start()
        with stack.client() as client:
            # Pooled connections to the current master (no worker: messages stay queued).
            warm = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(5)]
            old = sentinel_set.master()
            sentinel_set.failover()
            sentinel_set.wait_new_master(old.port)
            new = sentinel_set.master()
            assert sentinel_set.role(old) == "master"  # not demoted yet: the window
            after = [
                wait_until(lambda: _accepted(client), 15, interval=0.1, what="a 202")
                for _ in range(5)
            ]
            old_demoted_already = sentinel_set.role(old) != "master"
        with sentinel_set.node_client(new) as queue_db:
            queued = int(queue_db.llen(QUEUE))
        records = redis.Redis(
            host="127.0.0.1", port=new.port, password=PASSWORD, db=1, socket_timeout=2
        )
        with records:
            on_new = [task_id for task_id in after if records.exists(record_key(task_id))]
        print(
            f"after the switch: {len(on_new)} of {len(after)} records on the new master, "
            f"{queued} messages queued there (old master demoted meanwhile: "
            f"{old_demoted_already})"
        )
        assert on_new == after
        assert queued == len(warm) + len(after)
    finally:
        stack.stop()
