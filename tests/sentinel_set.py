"""A real Redis Sentinel set on loopback: 1 master + 2 replicas (AOF on) and 3 Sentinels.

Quorum 2, a 5 s down-after so a killed master is replaced within seconds: 1 s made a loaded
2-core machine fail over twice (a split brain, docs/upstream-redis-outages.md, "stall" branch).
Every process is started here and stopped by its pid (SIGTERM, then SIGKILL).

With `test_hosts` (tests/netns.py) each data node runs in a network namespace of its own,
bound to and announcing that host's address, so `partition_master` is a real partition; the
Sentinels stay on loopback in the root namespace, with the API and the worker: they are the
majority side, as Sentinels next to the clients are in most deployments.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.netns import TestHosts
from trustcard.local.redis_server import find_redis_server, free_port

HOST = "127.0.0.1"
MASTER_NAME = "trustcard"
QUORUM = 2
DOWN_AFTER_MS = 5000
FAILOVER_TIMEOUT_MS = 10_000


@dataclass
class Node:
    """One redis-server (or Sentinel) process of the set."""

    name: str
    port: int
    workdir: Path
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    # The address it binds (its test host's, or loopback).
    host: str = HOST

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> Node:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)
            self.process.wait(10)

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class SentinelSet:
    workdir: Path
    # requirepass of the data nodes (masterauth too) and of the Sentinels; None: no auth.
    password: str | None = None
    sentinel_password: str | None = None
    # Extra redis-server arguments for every data node (e.g. min-replicas-to-write).
    node_args: list[str] = field(default_factory=list)
    binary: str = field(default_factory=find_redis_server)
    nodes: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)
    # One network namespace per data node (None: all on loopback).
    test_hosts: TestHosts | None = None

    # -- start / stop --------------------------------------------------------------------
    def start(self, timeout: float = 30) -> SentinelSet:
        ports = [free_port() for _ in range(3)]
        hosts = [self._host(index) for index in range(3)]
        for index, port in enumerate(ports):
            master = (hosts[0], ports[0]) if index else None
            self.nodes.append(self._node(f"redis-{index}", hosts[index], port, master))
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            self._wait(lambda n=node: self._ping(n.host, n.port, self.password), timeout, node)
        # Replicas in sync before the Sentinels look: a promotion must find an up-to-date one.
        self._wait(lambda: self._replicas_online(ports[0]) == 2, timeout, self.nodes[0])
        for index in range(3):
            self.sentinels.append(self._sentinel(index, hosts[0], ports[0]).start())
        for sentinel in self.sentinels:
            self._wait(lambda s=sentinel: self._sees_quorum(s.port), timeout, sentinel)
        return self

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()

    def _host(self, index: int) -> str:
        return self.test_hosts.hosts[index].address if self.test_hosts else HOST

    def _node(self, name: str, host: str, port: int, master: tuple[str, int] | None) -> Node:
        directory = self.workdir / name
        argv = [
            self.binary,
            "--bind", host, "--port", str(port), "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--logfile", str(directory / f"{name}.log"), "--daemonize", "no",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        if master is not None:
            argv += ["--replicaof", master[0], str(master[1])]
        argv += ["--replica-announce-ip", host, *self.node_args]
        if self.test_hosts:
            index = int(name.rsplit("-", 1)[1])
            argv = self.test_hosts.hosts[index].command(argv)
        return Node(name, port, directory, argv, host=host)

    def _sentinel(self, index: int, master_host: str, master_port: int) -> Node:
        name = f"sentinel-{index}"
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        lines = [
            f"bind {HOST}",
            f"port {port}",
            "daemonize no",
            f"dir {directory}",
            f"logfile {directory / f'{name}.log'}",
            # Peers learn a Sentinel's address from its hellos: loopback, where it listens
            # (without this it would be the address it reaches the nodes from, the bridge's).
            f"sentinel announce-ip {HOST}",
            f"sentinel monitor {MASTER_NAME} {master_host} {master_port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {self.password}")
        if self.sentinel_password:
            lines.append(f"requirepass {self.sentinel_password}")
        # Sentinel rewrites its config file (known peers, the current master): one per Sentinel.
        config = directory / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n")
        return Node(name, port, directory, [self.binary, str(config), "--sentinel"])

    # -- what the Sentinels say ------------------------------------------------------------
    @property
    def hosts(self) -> str:
        """REDIS_SENTINEL_HOSTS for this set."""
        return ",".join(f"{HOST}:{s.port}" for s in self.sentinels)

    def sentinel_client(self, sentinel: Node) -> redis.Redis:
        return redis.Redis(
            host=HOST, port=sentinel.port, password=self.sentinel_password,
            socket_timeout=2, socket_connect_timeout=2, decode_responses=True,
        )  # fmt: skip

    def master_port(self) -> int | None:
        """The master's port as a majority of the live Sentinels report it (None: no majority)."""
        answers: list[int] = []
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            with contextlib.suppress(redis.RedisError), self.sentinel_client(sentinel) as client:
                address = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                if address:
                    answers.append(int(address[1]))
        for port in set(answers):
            if answers.count(port) >= QUORUM:
                return port
        return None

    def master(self) -> Node:
        port = self.master_port()
        assert port is not None, "the Sentinels agree on no master"
        return next(node for node in self.nodes if node.port == port)

    def node_client(self, node: Node) -> redis.Redis:
        return redis.Redis(
            host=node.host, port=node.port, password=self.password,
            socket_timeout=2, socket_connect_timeout=2,
        )  # fmt: skip

    def role(self, node: Node) -> str | None:
        with contextlib.suppress(redis.RedisError), self.node_client(node) as client:
            return str(client.info("replication")["role"])
        return None

    # -- faults ------------------------------------------------------------------------------
    def kill_master(self) -> Node:
        """SIGKILL the current master (no AOF flush, no goodbye to clients)."""
        master = self.master()
        master.kill(signal.SIGKILL)
        return master

    def partition_master(self) -> Node:
        """Cut the master's host off the network: its frames are dropped, nobody is told."""
        assert self.test_hosts is not None, "a partition needs test hosts (tests/netns.py)"
        master = self.master()
        self.test_hosts.partition(self.test_hosts.hosts[self.nodes.index(master)])
        return master

    def heal(self) -> None:
        assert self.test_hosts is not None
        self.test_hosts.heal()

    def failover(self) -> None:
        """A graceful failover (SENTINEL FAILOVER): the master is demoted, a replica promoted."""
        sentinel = next(s for s in self.sentinels if s.alive())
        with self.sentinel_client(sentinel) as client:
            client.execute_command("SENTINEL FAILOVER", MASTER_NAME)

    def wait_new_master(self, old_port: int, timeout: float = 60) -> float:
        """Seconds until a majority names another master and that node says it is master."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            port = self.master_port()
            if port is not None and port != old_port:
                node = next(n for n in self.nodes if n.port == port)
                if self.role(node) == "master":
                    return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"no new master within {timeout} s: {self.describe()}")

    def restart(self, node: Node, timeout: float = 30) -> None:
        """Start a stopped node again on its port and data; the Sentinels make it a replica."""
        node.start()
        self._wait(lambda: self._ping(node.host, node.port, self.password), timeout, node)

    def wait_replicas(self, count: int, timeout: float = 60) -> None:
        """Until the current master has `count` replicas online."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and self._replicas_online(port) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"master has not {count} replicas in {timeout} s: {self.describe()}")

    def describe(self) -> str:
        roles = {node.name: (node.port, self.role(node)) for node in self.nodes}
        return f"master port per Sentinels {self.master_port()}, nodes {roles}"

    # -- helpers -------------------------------------------------------------------------------
    def _ping(self, host: str, port: int, password: str | None) -> bool:
        with (
            contextlib.suppress(redis.RedisError),
            redis.Redis(host=host, port=port, password=password, socket_timeout=1) as client,
        ):
            return bool(client.ping())
        return False

    def _replicas_online(self, master_port: int) -> int:
        host = next((n.host for n in self.nodes if n.port == master_port), HOST)
        with (
            contextlib.suppress(redis.RedisError),
            redis.Redis(
                host=host, port=master_port, password=self.password, socket_timeout=1
            ) as client,
        ):
            info = client.info("replication")
            if info.get("role") != "master":
                return 0
            return sum(
                1
                for key, value in info.items()
                if key.startswith("slave") and isinstance(value, dict)
                and value.get("state") == "online"
            )  # fmt: skip
        return 0

    def _sees_quorum(self, port: int) -> bool:
        sentinel = next(s for s in self.sentinels if s.port == port)
        with contextlib.suppress(redis.RedisError), self.sentinel_client(sentinel) as client:
            state = client.sentinel_master(MASTER_NAME)
            return int(state["num-other-sentinels"]) >= 2 and int(state["num-slaves"]) >= 2
        return False

    def _wait(self, check: object, timeout: float, node: Node) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while not check():
            if not node.alive():
                raise RuntimeError(f"{node.name} exited: {node.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} not ready in {timeout} s: {node.log()[-2000:]}")
            time.sleep(0.05)
