"""Redis Sentinel in the chart: the bundled 3 Redis + 3 Sentinels and an external Sentinel set.

Render checks (services, PDB, anti-affinity, the REDIS_SENTINEL_* contract with the service, KEDA's
redis-sentinel trigger), then the rendered start-up scripts run as local processes: three "pods" on
their own loopback addresses (127.x.y.11-13, one port for Redis and one for Sentinel shared by all,
as in a cluster), the pod DNS names swapped for those addresses. A replica set forms, the master's
pod dies, the Sentinels promote a replica, and the dead pod, restarted, rejoins as a replica
because its start-up asked the Sentinels first.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml
from redis.sentinel import Sentinel

from tests.chart.helm import (
    ROOT,
    RenderError,
    container,
    env_map,
    find_tool,
    one,
    render_chart,
)
from tests.chart.variants import VARIANTS
from tests.stack import wait_until
from tests.tls_redis import Pki, make_pki
from trustcard.local.redis_server import find_redis_server, free_port, port_in_use

NODE = "release-trustcard-redis-node"
HEADLESS = "release-trustcard-redis-headless.trustcard.svc.cluster.local"
HOSTS = ",".join(f"{NODE}-{i}.{HEADLESS}:26379" for i in range(3))
SECRETS = "/run/secrets/trustcard"


def _secret_items(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    """path -> secret/key of a Deployment's secrets volume."""
    pod = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    return {
        item["path"]: f"{source['secret']['name']}/{item['key']}"
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }


# ---- render checks ----


def test_bundled_sentinel_renders_nodes_services_pdb_and_spreads_pods() -> None:
    objects = render_chart(VARIANTS["redis-sentinel-keda-network-policies"])
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "StatefulSet"] == [
        "release-trustcard-postgresql",
        NODE,
    ]
    node = one(objects, "StatefulSet", "-redis-node")
    assert node["spec"]["replicas"] == 3
    assert node["spec"]["serviceName"] == "release-trustcard-redis-headless"
    pod = node["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["redis", "sentinel"]
    assert container(node, "sentinel")["ports"] == [
        {"name": "sentinel", "containerPort": 26379, "protocol": "TCP"}
    ]
    # Soft anti-affinity by default, on the pods' own selector.
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == (node["spec"]["selector"]["matchLabels"])
    )
    pdb = one(objects, "PodDisruptionBudget", "-redis-node")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == node["spec"]["selector"]
    headless = one(objects, "Service", "-redis-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    sentinels = one(objects, "Service", "-redis-sentinel")
    assert sentinels["spec"]["ports"][0]["port"] == 26379
    # The standalone StatefulSet and Service are not rendered in sentinel mode.
    assert not [o for o in objects if o["metadata"]["name"] == "release-trustcard-redis"
                and o["kind"] in ("StatefulSet", "Service")]  # fmt: skip
    # NetworkPolicy: clients reach Redis and Sentinels; the pods reach each other on both ports.
    policy = one(objects, "NetworkPolicy", "-redis")["spec"]["ingress"]
    assert [p["port"] for p in policy[0]["ports"]] == ["redis", "sentinel"]
    assert policy[1]["from"] == [{"podSelector": node["spec"]["selector"]}]
    assert [p["port"] for p in policy[1]["ports"]] == ["redis", "sentinel"]
    hard = render_chart(
        {"redis": {"architecture": "sentinel", "sentinel": {"podAntiAffinity": "hard"}}},
        show_only=["templates/redis/redis-node-statefulset.yaml"],
    )[0]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(hard) == ["requiredDuringSchedulingIgnoredDuringExecution"]


def test_bundled_sentinel_env_contract_for_every_client() -> None:
    """The names agreed with the service side: REDIS_SENTINEL_HOSTS / _MASTER_NAME and the
    REDIS_SENTINEL_PASSWORD file; REDIS_URL keeps scheme and database, its host is ignored."""
    objects = render_chart(VARIANTS["redis-sentinel-keda-network-policies"])
    for deployment, name in (("-api", "api"), ("-worker", "worker"), ("-exporter", "exporter")):
        env = env_map(container(one(objects, "Deployment", deployment), name))
        assert env["REDIS_URL"] == "redis://release-trustcard-redis-sentinel:26379/0"
        assert env["REDIS_SENTINEL_HOSTS"] == HOSTS
        assert env["REDIS_SENTINEL_MASTER_NAME"] == "trustcard"
        items = _secret_items(objects, deployment)
        assert items["REDIS_PASSWORD"] == "release-trustcard-redis/redis-password"
        assert items["REDIS_SENTINEL_PASSWORD"] == "release-trustcard-redis/redis-password"
    # Standalone (the default) has none of it.
    default = render_chart({})
    env = env_map(container(one(default, "Deployment", "-worker"), "worker"))
    assert not [k for k in env if k.startswith("REDIS_SENTINEL")]
    assert "REDIS_SENTINEL_PASSWORD" not in _secret_items(default, "-worker")


def test_wait_replicas_reaches_the_api_only_when_set() -> None:
    """redis.sentinel.waitReplicas renders REDIS_WAIT_REPLICAS / _TIMEOUT_MS; 0 renders none."""
    values = {"redis": {"architecture": "sentinel", "sentinel": {"waitReplicas": 1}}}
    env = env_map(container(one(render_chart(values), "Deployment", "-api"), "api"))
    assert (env["REDIS_WAIT_REPLICAS"], env["REDIS_WAIT_TIMEOUT_MS"]) == ("1", "500")
    off = render_chart({"redis": {"architecture": "sentinel"}})
    assert "REDIS_WAIT_REPLICAS" not in env_map(container(one(off, "Deployment", "-api"), "api"))


def test_bundled_sentinel_keda_trigger_asks_the_sentinels_with_tls() -> None:
    objects = render_chart(VARIANTS["redis-sentinel-tls-mutual"])
    trigger = one(objects, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["type"] == "redis-sentinel"
    metadata = trigger["metadata"]
    assert metadata["addresses"] == HOSTS
    assert metadata["sentinelMaster"] == "ha"
    assert (metadata["enableTLS"], metadata["databaseIndex"], metadata["listName"]) == (
        "true",
        "0",
        "analysis",
    )
    auth = one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {(a["parameter"], a["name"], a["key"]) for a in auth} == {
        ("password", "release-trustcard-redis", "redis-password"),
        ("sentinelPassword", "release-trustcard-redis", "redis-password"),
        ("ca", "redis-tls", "ca.crt"),
        ("cert", "redis-tls", "tls.crt"),
        ("key", "redis-tls", "tls.key"),
    }
    env = env_map(container(one(objects, "Deployment", "-worker"), "worker"))
    assert env["REDIS_URL"] == "rediss://release-trustcard-redis-sentinel:26379/0"
    assert env["REDIS_TLS_CA_FILE"] == f"{SECRETS}/redis-tls/ca.crt"
    scripts = one(objects, "ConfigMap", "-redis-node-scripts")["data"]
    assert "--tls-replication yes" in scripts["start-redis.sh"]
    assert "tls-replication yes" in scripts["start-sentinel.sh"]


def test_external_sentinel_env_password_file_and_keda() -> None:
    objects = render_chart(VARIANTS["external-redis-sentinel-keda"])
    env = env_map(container(one(objects, "Deployment", "-api"), "api"))
    assert env["REDIS_SENTINEL_HOSTS"] == "sentinel-0.example:26379,sentinel-1.example:26379"
    assert env["REDIS_SENTINEL_MASTER_NAME"] == "mymaster"
    assert "REDIS_URL" not in env  # a file from the user's Secret, as without Sentinel
    items = _secret_items(objects, "-api")
    assert items["REDIS_URL"] == "my-redis/redis-url"
    assert items["REDIS_SENTINEL_PASSWORD"] == "my-redis/sentinel-password"
    trigger = one(objects, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["type"] == "redis-sentinel"
    assert trigger["metadata"]["addresses"] == env["REDIS_SENTINEL_HOSTS"]
    assert trigger["metadata"]["sentinelMaster"] == "mymaster"
    auth = one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {(a["parameter"], a["key"]) for a in auth} == {
        ("password", "redis-password"),
        ("sentinelPassword", "sentinel-password"),
    }
    # No Sentinel password key: no file, no KEDA parameter.
    values = VARIANTS["external-redis-sentinel-keda"]
    plain = {**values, "externalRedis": {**values["externalRedis"]}}
    plain["externalRedis"]["sentinel"] = {**values["externalRedis"]["sentinel"], "passwordKey": ""}
    objects = render_chart(plain)
    assert "REDIS_SENTINEL_PASSWORD" not in _secret_items(objects, "-api")
    auth = one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert [a["parameter"] for a in auth] == ["password"]


def test_ha_example_values_render_valid_sentinel_with_tls() -> None:
    values = yaml.safe_load((ROOT / "k8s" / "values-ha.yaml").read_text())
    objects = render_chart(values, release="trustcard")
    for obj in objects:
        if "." not in obj["apiVersion"].rpartition("/")[0]:
            kubernetes_validate.validate(obj, "1.35", strict=True)
    node = one(objects, "StatefulSet", "-redis-node")
    affinity = node["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in affinity
    env = env_map(container(one(objects, "Deployment", "-worker"), "worker"))
    assert env["REDIS_URL"] == "rediss://trustcard-redis-sentinel:26379/0"
    # The names the file's comment tells to put in the certificate are the names announced.
    assert env["REDIS_SENTINEL_HOSTS"].split(",")[0] == (
        "trustcard-redis-node-0.trustcard-redis-headless.trustcard.svc.cluster.local:26379"
    )
    assert one(objects, "ScaledObject")["spec"]["triggers"][0]["type"] == "redis-sentinel"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"redis": {"enabled": False}, "externalRedis": {
                "existingSecret": "r", "sentinel": {"enabled": True}}},
            "externalRedis.sentinel.enabled needs externalRedis.sentinel.hosts",
        ),
        (
            {"redis": {"architecture": "sentinel", "sentinel": {"quorum": 4}}},
            "redis.sentinel.quorum (4) must not exceed redis.sentinel.replicas (3)",
        ),
        (
            {"redis": {"architecture": "sentinel", "sentinel": {"minReplicasToWrite": 3}}},
            "redis.sentinel.minReplicasToWrite (3) must be below redis.sentinel.replicas (3)",
        ),
        ({"redis": {"architecture": "cluster"}}, "at '/redis/architecture'"),
        ({"redis": {"sentinel": {"replicas": 2}}}, "at '/redis/sentinel/replicas'"),
        (
            {"externalRedis": {"sentinel": {"hosts": ["sentinel-0.example"]}}},
            "at '/externalRedis/sentinel/hosts/0'",
        ),
    ],
)  # fmt: skip
def test_contradictory_sentinel_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render_chart(values)


# ---- the rendered commands as local processes ----


def _loopback_base() -> str:
    """127.x.y: a /24 of loopback addresses of this test run (Linux routes all of 127/8 to lo)."""
    return f"127.{100 + os.getpid() % 100}.{os.getpid() % 250 + 1}"


@dataclass
class Pod:
    """One rendered pod: its Redis and Sentinel containers as processes on its own address."""

    ordinal: int
    ip: str
    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{NODE}-{self.ordinal}"

    @property
    def host(self) -> str:
        return f"{self.name}.{HEADLESS}"


class LocalSentinelSet:
    """The sentinel-mode StatefulSet, rendered, run on loopback; what a cluster gives is swapped:
    pod DNS names -> the pods' addresses, mounted paths -> directories, ports -> free ones."""

    def __init__(self, workdir: Path, values: dict[str, Any], pki: Pki | None = None) -> None:
        self.workdir = workdir
        self.objects = render_chart(values)
        secret = one(self.objects, "Secret", "-redis")
        self.password = base64.b64decode(secret["data"]["redis-password"]).decode()
        self.node = one(self.objects, "StatefulSet", "-redis-node")
        self.scripts: dict[str, str] = one(self.objects, "ConfigMap", "-redis-node-scripts")["data"]
        self.server = find_redis_server()
        self.cli = str(Path(self.server).with_name("redis-cli"))
        self.pki = pki
        base = _loopback_base()
        replicas = self.node["spec"]["replicas"]
        self.pods = [Pod(i, f"{base}.{11 + i}", workdir / f"pod-{i}") for i in range(replicas)]
        self.redis_port, self.sentinel_port = self._ports()
        # What the pods mount: the password Secret and the TLS Secret.
        self.mounted = workdir / "mounted"
        (self.mounted / "redis").mkdir(parents=True)
        (self.mounted / "redis" / "password").write_text(self.password)
        if pki is not None:
            (self.mounted / "redis-tls").mkdir()
            files = {"ca.crt": pki.ca, "tls.crt": pki.server_cert, "tls.key": pki.server_key}
            for name, path in files.items():
                (self.mounted / "redis-tls" / name).write_text(path.read_text())

    def _ports(self) -> tuple[int, int]:
        """A Redis and a Sentinel port free on every pod address (as 6379 and 26379 are in pods)."""
        while True:
            ports = free_port(), free_port()
            if not any(port_in_use(p.ip, port) for p in self.pods for port in ports):
                return ports

    def local(self, text: str, pod: Pod, volume_dir: Path) -> str:
        """A rendered script or probe with the cluster's names, paths and ports made local."""
        swaps = [
            ("redis_port=6379", f"redis_port={self.redis_port}"),
            ("sentinel_port=26379", f"sentinel_port={self.sentinel_port}"),
            # Three servers on one port need one address each (a pod has its own IP).
            ("redis-server /tmp/redis.conf", f"redis-server /tmp/redis.conf --bind {pod.ip}"),
            ("/tmp/sentinel.conf --sentinel", f"/tmp/sentinel.conf --sentinel --bind {pod.ip}"),
            ("-h 127.0.0.1 -p 26379", f"-h {pod.ip} -p {self.sentinel_port}"),
            ("-h 127.0.0.1", f"-h {pod.ip} -p {self.redis_port}"),
            *((other.host, other.ip) for other in self.pods),
            # Mounted paths: through markers, as the local paths themselves live under /tmp.
            ("redis-server ", "\0SERVER "),
            ("redis-cli ", "\0CLI "),
            ("/run/secrets/", "\0SECRETS/"),
            ("/scripts/", "\0SCRIPTS/"),
            ("dir /tmp\\n", "dir \0TMP\\n"),
            ("/tmp/", "\0TMP/"),
            (" /data", " \0DATA"),
        ]
        markers = {
            "\0SERVER": self.server,
            "\0CLI": self.cli,
            "\0SECRETS": str(self.mounted),
            "\0SCRIPTS": str(volume_dir / "scripts"),
            "\0TMP": str(volume_dir / "tmp"),
            "\0DATA": str(pod.root / "data"),
        }
        for cluster, here in swaps:
            text = text.replace(cluster, here)
        for marker, path in markers.items():
            text = text.replace(marker, path)
        assert "\0" not in text
        return text

    def start(self, pod: Pod, name: str) -> None:
        """The container `name` (redis or sentinel) of `pod`, with its rendered command."""
        spec = container(self.node, name)
        volume_dir = pod.root / name
        (volume_dir / "tmp").mkdir(parents=True, exist_ok=True)
        (volume_dir / "scripts").mkdir(exist_ok=True)
        (pod.root / "data").mkdir(exist_ok=True)
        for file, script in self.scripts.items():
            (volume_dir / "scripts" / file).write_text(self.local(script, pod, volume_dir))
        command = spec["command"]
        assert command[:2] == ["sh", "/scripts/" + f"start-{name}.sh"]
        env = {"PATH": os.environ["PATH"]}
        for item in spec["env"]:
            # POD_NAME comes from the downward API (metadata.name).
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = pod.name
        log = (pod.root / f"{name}.log").open("ab")
        pod.processes[name] = subprocess.Popen(
            ["sh", str(volume_dir / "scripts" / f"start-{name}.sh")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def probes_pass(self, pod: Pod, name: str) -> bool:
        spec = container(self.node, name)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = spec[probe]["exec"]["command"]
            local = [*command[:2], self.local(command[2], pod, pod.root / name)]
            if subprocess.run(local, capture_output=True, timeout=10).returncode != 0:
                return False
        return True

    def start_pod(self, pod: Pod) -> None:
        """Both containers, then wait for their probes (the StatefulSet is OrderedReady)."""
        assert self.node["spec"]["podManagementPolicy"] == "OrderedReady"
        for name in ("redis", "sentinel"):
            self.start(pod, name)
        for name in ("redis", "sentinel"):

            def ready(name: str = name) -> bool:
                process = pod.processes[name]
                exited = f"{pod.name}/{name} exited: {self.log(pod, name)[-3000:]}"
                assert process.poll() is None, exited
                return self.probes_pass(pod, name)

            wait_until(ready, 60, interval=0.2, what=f"{pod.name}/{name} probes")

    def kill_pod(self, pod: Pod) -> None:
        """The pod dies (node lost): SIGKILL, no shutdown of either process."""
        for process in pod.processes.values():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        pod.processes.clear()

    def log(self, pod: Pod, name: str) -> str:
        return (pod.root / f"{name}.log").read_text(errors="replace")

    def client(self, pod: Pod, sentinel: bool = False) -> redis.Redis:
        """The test's own inspection client (the chart's clients verify host names; this one
        talks to addresses, so it checks the chain only)."""
        port = self.sentinel_port if sentinel else self.redis_port
        tls: dict[str, Any] = {}
        if self.pki is not None:
            tls = {
                "ssl": True,
                "ssl_ca_certs": str(self.pki.ca),
                "ssl_certfile": str(self.pki.client_cert),
                "ssl_keyfile": str(self.pki.client_key),
                "ssl_check_hostname": False,
            }
        return redis.Redis(host=pod.ip, port=port, password=self.password, socket_timeout=3, **tls)

    def sentinel(self, pod: Pod, *args: str) -> Any:
        """A SENTINEL subcommand on the pod's Sentinel."""
        return self.client(pod, sentinel=True).execute_command("SENTINEL", *args)  # type: ignore[no-untyped-call]

    def master_by_sentinels(self, pods: list[Pod]) -> str | None:
        """The address every Sentinel of `pods` names as master, or None while they disagree."""
        answers = set()
        for pod in pods:
            try:
                reply = self.sentinel(pod, "GET-MASTER-ADDR-BY-NAME", "trustcard")
            except redis.RedisError:
                return None
            answers.add(reply[0].decode() if reply else None)
        return answers.pop() if len(answers) == 1 else None

    def replication(self, pod: Pod) -> dict[str, Any]:
        info: dict[str, Any] = self.client(pod).info("replication")
        return info

    def stop(self) -> None:
        for pod in self.pods:
            for process in pod.processes.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait()


SENTINEL_TIMINGS = {"downAfterMilliseconds": 2000, "failoverTimeout": 10000}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=["plain", "tls-mutual"])
def sentinel_set(
    request: pytest.FixtureRequest, tmp_path: Path, pki: Pki
) -> Iterator[LocalSentinelSet]:
    redis_values: dict[str, Any] = {"architecture": "sentinel", "sentinel": SENTINEL_TIMINGS}
    if request.param == "tls-mutual":
        redis_values["tls"] = {"enabled": True, "existingSecret": "redis-tls", "authClients": True}
    local = LocalSentinelSet(
        tmp_path, {"redis": redis_values}, pki if request.param == "tls-mutual" else None
    )
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def plain_set(tmp_path: Path) -> Iterator[LocalSentinelSet]:
    values = {"redis": {"architecture": "sentinel", "sentinel": SENTINEL_TIMINGS}}
    local = LocalSentinelSet(tmp_path, values)
    try:
        yield local
    finally:
        local.stop()


def _formed(local: LocalSentinelSet) -> bool:
    """Pod 0 master, two replicas in sync; every Sentinel names it, sees 2 peers and 2 replicas."""
    first, *others = local.pods
    master = local.replication(first)
    return (
        master["role"] == "master"
        and master["connected_slaves"] == 2
        and all(local.replication(p)["master_link_status"] == "up" for p in others)
        and local.master_by_sentinels(local.pods) == first.ip
        and all(
            len(local.sentinel(p, "SENTINELS", "trustcard")) == 2
            and len(local.sentinel(p, "REPLICAS", "trustcard")) == 2
            for p in local.pods
        )
    )


def test_rendered_pods_form_a_replica_set_fail_over_and_the_old_master_rejoins_as_replica(
    sentinel_set: LocalSentinelSet,
) -> None:
    local = sentinel_set
    first, *others = local.pods
    for pod in local.pods:
        local.start_pod(pod)

    # A replica set: pod 0 is master (first start, no Sentinel to ask), the others replicate it.
    wait_until(
        lambda: _formed(local), 60, interval=0.2, what="3 Redis + 3 Sentinels to form a replica set"
    )
    assert "starting as the master" in local.log(first, "redis")
    for pod in others:
        assert f"starting as a replica of {first.ip}:{local.redis_port}" in local.log(pod, "redis")
        # Replicas announce the pod's DNS name (here: its address), not the connection's source.
        assert local.replication(pod)["slave_read_only"] == 1
    announced = {local.replication(first)[f"slave{i}"]["ip"] for i in range(2)}
    assert announced == {p.ip for p in others}

    # AOF, noeviction and maxmemory on every node, as in standalone mode.
    for pod in local.pods:
        config = local.client(pod).config_get("*")
        assert config["appendonly"] == "yes"
        assert config["maxmemory-policy"] == "noeviction"
        assert config["maxmemory"] == str(768 * 1024 * 1024)
        assert config["min-replicas-to-write"] == "1"

    before = local.client(first)
    before.rpush("analysis", *[f"task-{i}" for i in range(100)])
    assert before.wait(2, 5000) == 2  # both replicas have them

    # The master's pod dies; the two remaining Sentinels (a majority) promote a replica.
    killed_at = time.monotonic()
    local.kill_pod(first)
    new_master_ip = wait_until(
        lambda: (ip := local.master_by_sentinels(others)) != first.ip and ip,
        30,
        interval=0.1,
        what="the Sentinels to promote a replica",
    )
    new_master = next(p for p in others if p.ip == new_master_ip)
    replica = next(p for p in others if p is not new_master)
    wait_until(
        lambda: (
            local.replication(new_master)["role"] == "master"
            and local.replication(replica).get("master_host") == new_master.ip
            and local.replication(replica)["master_link_status"] == "up"
        ),
        30,
        interval=0.1,
        what="the other replica to follow the new master",
    )
    failover_seconds = time.monotonic() - killed_at
    print(f"failover: new master {new_master.name} after {failover_seconds:.1f} s")
    after = local.client(new_master)
    assert after.llen("analysis") == 100  # nothing written before the kill is lost
    after.rpush("analysis", "written-after-failover")

    # The old master's pod comes back: it asks the Sentinels and starts as a replica at once.
    local.start(first, "redis")
    started_at = time.monotonic()

    def first_answer() -> dict[str, Any] | None:
        assert first.processes["redis"].poll() is None, local.log(first, "redis")[-3000:]
        try:
            return local.replication(first)
        except redis.RedisError:
            return None

    role = wait_until(first_answer, 30, interval=0.05, what="the restarted pod's Redis")
    # Sentinel would convert a returning old master only seconds later: the first answer already
    # says replica, so no client ever saw two masters.
    assert role["role"] == "slave", role
    assert role["master_host"] == new_master.ip
    assert time.monotonic() - started_at < 5
    assert f"starting as a replica of {new_master.ip}:" in local.log(first, "redis")
    local.start(first, "sentinel")
    wait_until(
        lambda: local.replication(first)["master_link_status"] == "up",
        30,
        interval=0.1,
        what="the old master to sync from the new one",
    )
    assert local.client(first).lrange("analysis", -1, -1) == [b"written-after-failover"]
    wait_until(
        lambda: local.master_by_sentinels(local.pods) == new_master.ip,
        30,
        interval=0.2,
        what="all three Sentinels to agree on the new master",
    )
    assert local.probes_pass(first, "redis")
    assert local.probes_pass(first, "sentinel")
    assert local.replication(new_master)["connected_slaves"] == 2


def test_a_restarted_master_without_its_data_waits_for_the_failover_instead_of_emptying_replicas(
    plain_set: LocalSentinelSet,
) -> None:
    """Its volume is gone and it is back before the Sentinels noticed: started as master, it would
    make the replicas resync an empty dataset. It waits for them to promote a replica instead."""
    local = plain_set
    first, *others = local.pods
    for pod in local.pods:
        local.start_pod(pod)
    wait_until(lambda: _formed(local), 60, interval=0.2, what="the replica set")
    before = local.client(first)
    before.rpush("analysis", *[f"task-{i}" for i in range(100)])
    assert before.wait(2, 5000) == 2
    local.kill_pod(first)
    shutil.rmtree(first.root / "data")
    (first.root / "data").mkdir()
    # Back at once: the Sentinels still name it master (down-after is 2 s).
    assert local.master_by_sentinels(others) == first.ip
    local.start(first, "redis")
    local.start(first, "sentinel")

    def settled() -> Pod | None:
        """The master all three Sentinels name, once it has both replicas in sync."""
        named = local.master_by_sentinels(local.pods)
        master = next((p for p in local.pods if p.ip == named), None)
        if master is None:
            return None
        try:
            in_sync = [
                local.replication(p)["master_link_status"] == "up"
                for p in local.pods
                if p is not master
            ]
            return (
                master
                if local.replication(master)["connected_slaves"] == 2 and all(in_sync)
                else None
            )
        except (redis.RedisError, KeyError):
            return None

    master = wait_until(settled, 45, interval=0.2, what="the set to settle")
    # Nothing lost: every node has the 100 tasks, the restarted one included.
    for pod in local.pods:
        assert local.client(pod).llen("analysis") == 100, pod.name
    assert master is not first
    log = local.log(first, "redis")
    assert "waiting for them to fail over" in log
    assert f"starting as a replica of {master.ip}:" in log


class SequenceWriter(threading.Thread):
    """The service's side of a switchover: a steady stream of RPUSHes of sequence numbers through a
    Sentinel client (as the service's), each retried until acknowledged; a write counts as
    acknowledged only when Redis answered it."""

    def __init__(self, local: LocalSentinelSet) -> None:
        super().__init__(daemon=True)
        sentinels = Sentinel(
            [(p.ip, local.sentinel_port) for p in local.pods],
            sentinel_kwargs={"password": local.password, "socket_timeout": 1},
        )
        self.master = sentinels.master_for("trustcard", password=local.password, socket_timeout=5)
        self.acknowledged: list[int] = []
        self.latencies: list[float] = []  # first attempt -> acknowledgement, per write
        self.errors: Counter[str] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        sequence = 0
        while not self.halt.is_set():
            first_try = time.monotonic()
            while not self.halt.is_set():
                try:
                    self.master.rpush("sequence", sequence)
                except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as error:
                    # READONLY reaches here as ConnectionError("...master is now a slave").
                    self.errors[type(error).__name__] += 1
                    time.sleep(0.01)
                    continue
                except redis.ResponseError as error:  # NOREPLICAS while replicas reattach
                    self.errors[str(error).split()[0]] += 1
                    time.sleep(0.01)
                    continue
                self.acknowledged.append(sequence)
                self.latencies.append(time.monotonic() - first_try)
                break
            sequence += 1
            time.sleep(0.001)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)
        assert not self.is_alive()


def test_the_rendered_prestop_hands_the_master_role_over_without_losing_acknowledged_writes(
    plain_set: LocalSentinelSet,
) -> None:
    """A rolling update or drain: the master's preStop pauses writes, lets the replicas catch up,
    has the Sentinels promote one and turns its own Redis into its replica. Clients wait a second,
    not downAfterMilliseconds, and every write the old master acknowledged is on the new one."""
    local = plain_set
    first, *others = local.pods
    for pod in local.pods:
        local.start_pod(pod)
    wait_until(lambda: _formed(local), 60, interval=0.2, what="the replica set")
    local.client(first).rpush("analysis", *[f"task-{i}" for i in range(100)])
    command = container(local.node, "redis")["lifecycle"]["preStop"]["exec"]["command"]
    assert command == ["sh", "/scripts/prestop-redis.sh"]
    script = first.root / "redis" / "scripts" / "prestop-redis.sh"
    env = {"PATH": os.environ["PATH"], "POD_NAME": first.name}

    writer = SequenceWriter(local)
    writer.start()
    try:
        wait_until(lambda: len(writer.acknowledged) >= 300, 30, what="writes before the preStop")
        started = time.monotonic()
        done = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, timeout=40
        )
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        after_prestop = len(writer.acknowledged)
        wait_until(
            lambda: len(writer.acknowledged) >= after_prestop + 300,
            30,
            what="writes after the preStop",
        )
    finally:
        writer.stop()
    print(f"preStop handed the master role over in {seconds:.1f} s")
    assert seconds < 10  # well inside terminationGracePeriodSeconds (30)
    new_master_ip = local.master_by_sentinels(others)
    assert new_master_ip in {p.ip for p in others}
    assert f"handed the master role to {new_master_ip}:" in done.stdout
    role = local.replication(first)
    assert (role["role"], role["master_host"]) == ("slave", new_master_ip)
    with pytest.raises(redis.ReadOnlyError):
        local.client(first).rpush("analysis", "late-write")
    new_master = next(p for p in others if p.ip == new_master_ip)
    assert local.client(new_master).llen("analysis") == 100

    # Every acknowledged write is on the new master.
    stored = {int(v) for v in local.client(new_master).lrange("sequence", 0, -1)}
    lost = sorted(set(writer.acknowledged) - stored)
    print(
        f"{len(writer.acknowledged)} writes acknowledged, {len(lost)} lost; "
        f"longest wait for an acknowledgement {max(writer.latencies):.2f} s; "
        f"retried errors {dict(writer.errors)}"
    )
    assert not lost, f"{len(lost)} acknowledged writes lost, first {lost[:10]}"
    assert max(writer.latencies) < 10

    # On a replica the hook does nothing.
    again = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert (again.returncode, again.stdout) == (0, "")


def test_the_rendered_prestop_is_posix_sh_and_shellcheck_clean() -> None:
    """The Redis image is alpine (busybox sh): the hook, with the helpers it sources, passes
    shellcheck as POSIX sh."""
    shellcheck = find_tool("shellcheck")
    assert shellcheck, "shellcheck is not installed: run scripts/install-tools"
    values = {"redis": {"architecture": "sentinel"}}
    scripts = one(render_chart(values), "ConfigMap", "-redis-node-scripts")["data"]
    hook = scripts["prestop-redis.sh"].replace(". /scripts/common.sh\n", "", 1)
    text = "#!/bin/sh\n" + scripts["common.sh"] + hook
    done = subprocess.run(
        [shellcheck, "--shell=sh", "--severity=style", "-"],
        input=text,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout


def test_the_rendered_prestop_resumes_writes_and_fails_when_no_replica_can_take_over(
    plain_set: LocalSentinelSet,
) -> None:
    """Both other pods are gone: no replica can catch up, so the hook must not leave the master
    paused until its timeout. It unpauses and exits 1 (Kubernetes stops the pod anyway)."""
    local = plain_set
    first, *others = local.pods
    for pod in local.pods:
        local.start_pod(pod)
    wait_until(lambda: _formed(local), 60, interval=0.2, what="the replica set")
    for pod in others:
        local.kill_pod(pod)
    wait_until(
        lambda: local.replication(first)["connected_slaves"] == 0, 10, what="replicas to drop"
    )
    script = first.root / "redis" / "scripts" / "prestop-redis.sh"
    env = {"PATH": os.environ["PATH"], "POD_NAME": first.name}
    started = time.monotonic()
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=40)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the replicas did not catch up within 5 s; writes resumed" in done.stderr
    assert time.monotonic() - started < 10
    assert local.replication(first)["role"] == "master"
    # Not paused: PUBLISH (paused by CLIENT PAUSE WRITE, not refused by min-replicas-to-write as
    # writes are with no replica left) is answered at once; paused, it would wait out the 30 s.
    asked = time.monotonic()
    assert local.client(first).publish("probe", "after-the-hook") == 0
    assert time.monotonic() - asked < 2
