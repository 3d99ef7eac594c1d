"""The chart's Flower (flower.*) and task events (worker.taskEvents, worker.extraArgs): rendered
objects, refusals, and the rendered Flower command run as a local process against a real
Redis (plain and TLS), a real worker and API, all as rendered."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.chart.helm import (
    CHART,
    ROOT,
    RenderError,
    by_kind,
    container,
    env_map,
    find_tool,
    one,
    render_chart,
    render_notes,
)
from tests.chart.test_redis_tls import ProductionCluster, _secret
from tests.chart.test_rendered_commands import TRUSTCARD, Cluster
from tests.integration.test_flower import receives_events
from tests.stack import Proc, upgrade_database, wait_until
from tests.tls_redis import Pki, TlsRedisServer, make_pki
from trustcard.local.redis_server import free_port

FLOWER = {"flower": {"enabled": True}}


def _flower(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return container(one(objects, "Deployment", "-flower"), "flower")


def _volume_items(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    """path -> Secret name of the secrets volume's files."""
    pod = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    return {
        item["path"]: source["secret"]["name"]
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }


class TestTaskEventsAndWorkerArgs:
    def test_off_by_default_and_no_flower(self) -> None:
        objects = render_chart()
        assert one(objects, "ConfigMap", "-config")["data"]["WORKER_SEND_TASK_EVENTS"] == "false"
        assert container(one(objects, "Deployment", "-worker"), "worker")["args"] == ["worker"]
        names = [obj["metadata"]["name"] for obj in objects]
        assert not [name for name in names if "flower" in name]
        assert "Flower" not in render_notes()

    def test_task_events_reach_api_and_worker_and_extra_args_the_worker(self) -> None:
        objects = render_chart(
            {"worker": {"taskEvents": True, "extraArgs": ["--without-gossip", "-O", "fair"]}}
        )
        assert one(objects, "ConfigMap", "-config")["data"]["WORKER_SEND_TASK_EVENTS"] == "true"
        worker = container(one(objects, "Deployment", "-worker"), "worker")
        assert worker["args"] == ["worker", "--without-gossip", "-O", "fair"]
        # Both read the ConfigMap: the API sends task-sent events, workers the rest.
        for name in ("api", "worker"):
            spec = container(one(objects, "Deployment", f"-{name}"), name)
            assert spec["envFrom"][0]["configMapRef"]["name"] == "release-trustcard-config"


class TestFlowerObjects:
    def test_default_flower_basic_auth_from_a_generated_secret(self) -> None:
        objects = render_chart(FLOWER)
        spec = _flower(objects)
        assert spec["args"] == [
            "flower", "--host", "0.0.0.0", "--port", "5555", "--max-tasks", "10000",
        ]  # fmt: skip
        assert spec["readinessProbe"]["httpGet"] == {"path": "/healthcheck", "port": "http"}
        assert spec["livenessProbe"]["httpGet"] == {"path": "/healthcheck", "port": "http"}
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["resources"]["limits"]["memory"] == "512Mi"
        # The credentials come as a file, never as an env literal.
        assert "FLOWER_BASIC_AUTH" not in env_map(spec)
        items = _volume_items(objects, "-flower")
        assert items["FLOWER_BASIC_AUTH"] == "release-trustcard-flower"
        assert items["REDIS_PASSWORD"] == "release-trustcard-redis"
        secret = one(objects, "Secret", "-flower")
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        user, _, password = base64.b64decode(secret["data"]["basic-auth"]).decode().partition(":")
        assert user == "admin"
        assert len(password) == 32
        service = one(objects, "Service", "-flower")
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        # One replica, no PDB, no Ingress, no PVC unless asked.
        assert one(objects, "Deployment", "-flower")["spec"]["replicas"] == 1
        pdbs = [o["metadata"]["name"] for o in by_kind(objects, "PodDisruptionBudget")]
        assert not [name for name in pdbs if "flower" in name]
        assert not by_kind(objects, "PersistentVolumeClaim")
        assert not [i for i in by_kind(objects, "Ingress") if "flower" in i["metadata"]["name"]]
        notes = render_notes(FLOWER)
        assert "get secret release-trustcard-flower" in notes
        assert "worker.taskEvents is false: Flower lists the workers but no tasks" in notes

    def test_existing_secret_is_mounted_and_none_generated(self) -> None:
        objects = render_chart(
            {"flower": {"enabled": True, "auth": {"existingSecret": "ops-flower"}}}
        )
        assert _volume_items(objects, "-flower")["FLOWER_BASIC_AUTH"] == "ops-flower"
        assert not [s for s in by_kind(objects, "Secret") if "flower" in s["metadata"]["name"]]

    def test_no_auth_is_refused_unless_acknowledged(self) -> None:
        proxy = {"enabled": True, "auth": {"mode": "none-behind-proxy"}}
        with pytest.raises(RenderError, match=r"set flower\.auth\.acknowledgeNoAuth=true"):
            render_chart({"flower": proxy})
        with pytest.raises(RenderError, match="/flower/auth/mode"):
            render_chart({"flower": {"enabled": True, "auth": {"mode": "none"}}})
        proxy["auth"] = {"mode": "none-behind-proxy", "acknowledgeNoAuth": True}
        objects = render_chart({"flower": proxy})
        assert _flower(objects)["args"][-1] == "--no-auth"
        assert "FLOWER_BASIC_AUTH" not in _volume_items(objects, "-flower")
        assert not [s for s in by_kind(objects, "Secret") if "flower" in s["metadata"]["name"]]
        assert "NO authentication in Flower" in render_notes({"flower": proxy})

    def test_generated_secret_refused_without_generation_or_under_argo_cd(self) -> None:
        existing = {
            "secrets": {"generate": False},
            "redis": {"auth": {"existingSecret": "r"}},
            "api": {"auth": {"existingSecret": "a"}},
            "database": {"bundled": {"existingSecret": "d"}},
        }
        with pytest.raises(RenderError, match=r"secrets.generate=false: set flower.auth.existing"):
            render_chart({**existing, **FLOWER})
        render_chart({**existing, "flower": {"enabled": True, "auth": {"existingSecret": "f"}}})
        values = ROOT / ".tools" / "flower-argo.yaml"
        values.write_text(yaml.safe_dump({**FLOWER, **existing, "secrets": {"generate": True}}))
        try:
            helm = str(find_tool("helm"))
            argo = subprocess.run(
                [helm, "template", "r", str(CHART), "--api-versions", "argoproj.io/v1alpha1",
                 "-f", str(values)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
        finally:
            values.unlink()
        assert argo.returncode != 0
        assert "rendered for Argo CD" in argo.stderr
        assert "flower.auth.existingSecret" in argo.stderr

    def test_url_prefix_ingress_persistence_and_extra_args(self) -> None:
        values = {
            "flower": {
                "enabled": True,
                "urlPrefix": "ops/flower",
                "readOnly": False,
                "extraArgs": ["--purge_offline_workers=600"],
                "extraEnv": [{"name": "FLOWER_NATURAL_TIME", "value": "true"}],
                "persistence": {"enabled": True, "size": "2Gi"},
                "ingress": {
                    "enabled": True,
                    "className": "nginx",
                    "hosts": ["ops.example.com"],
                    "tls": [{"secretName": "ops-tls", "hosts": ["ops.example.com"]}],
                },
            }
        }
        objects = render_chart(values)
        spec = _flower(objects)
        args = spec["args"]
        assert args[args.index("--url-prefix") + 1] == "ops/flower"
        assert args[args.index("--state-file") + 1] == "/var/lib/flower/flower-state"
        assert "--no-read-only" in args
        assert args[-1] == "--purge_offline_workers=600"
        assert env_map(spec)["FLOWER_NATURAL_TIME"] == "true"
        assert spec["readinessProbe"]["httpGet"]["path"] == "/ops/flower/healthcheck"
        assert {"name": "state", "mountPath": "/var/lib/flower"} in spec["volumeMounts"]
        pvc = one(objects, "PersistentVolumeClaim", "-flower")
        assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
        assert one(objects, "Deployment", "-flower")["spec"]["strategy"]["type"] == "Recreate"
        rule = one(objects, "Ingress", "-flower")["spec"]["rules"][0]
        assert rule["host"] == "ops.example.com"
        assert rule["http"]["paths"][0]["path"] == "/ops/flower"
        assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "release-trustcard-flower"
        assert "https://ops.example.com/ops/flower/" in render_notes(values)

    def test_service_monitor_scrapes_flower_metrics_under_its_prefix(self) -> None:
        objects = render_chart(
            {
                "flower": {"enabled": True, "urlPrefix": "flower"},
                "monitoring": {"serviceMonitor": {"enabled": True}},
            }
        )
        monitor = one(objects, "ServiceMonitor", "-flower")
        assert monitor["spec"]["endpoints"][0]["port"] == "http"
        assert monitor["spec"]["endpoints"][0]["path"] == "/flower/metrics"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == "flower"

    def test_network_policy_ingress_and_egress_to_dns_and_redis_only(self) -> None:
        ingress_from = [{"namespaceSelector": {"matchLabels": {"name": "oauth2-proxy"}}}]
        objects = render_chart(
            {
                "flower": {"enabled": True, "networkPolicy": {"ingressFrom": ingress_from}},
                "networkPolicy": {"enabled": True},
            }
        )
        policy = one(objects, "NetworkPolicy", "-flower")["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        assert policy["ingress"] == [
            {"ports": [{"port": "http", "protocol": "TCP"}], "from": ingress_from}
        ]
        dns, redis = policy["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
        assert "to" not in dns
        assert redis["ports"] == [{"port": 6379, "protocol": "TCP"}]
        peer = redis["to"][0]["podSelector"]["matchLabels"]
        assert peer["app.kubernetes.io/component"] == "redis"
        # The bundled Redis admits Flower's pods.
        redis_policy = one(objects, "NetworkPolicy", "-redis")["spec"]
        components = [
            p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in redis_policy["ingress"][0]["from"]
        ]
        assert "flower" in components

    def test_network_policy_to_an_external_redis(self) -> None:
        to = [{"ipBlock": {"cidr": "10.1.0.0/24"}}]
        objects = render_chart(
            {
                "redis": {"enabled": False},
                "externalRedis": {"existingSecret": "r", "address": "redis.example:6380"},
                "flower": {"enabled": True, "networkPolicy": {"externalRedisTo": to}},
                "networkPolicy": {"enabled": True},
            }
        )
        redis = one(objects, "NetworkPolicy", "-flower")["spec"]["egress"][1]
        assert redis == {"ports": [{"port": 6380, "protocol": "TCP"}], "to": to}
        assert _volume_items(objects, "-flower")["REDIS_URL"] == "r"

    def test_network_policy_admits_the_sentinels(self) -> None:
        """Flower asks the Sentinels for the master: their port must be open too."""
        netpol = {"networkPolicy": {"enabled": True}}
        bundled = render_chart({**FLOWER, **netpol, "redis": {"architecture": "sentinel"}})
        egress = one(bundled, "NetworkPolicy", "-flower")["spec"]["egress"][1]
        assert [p["port"] for p in egress["ports"]] == [6379, 26379]
        external = render_chart(
            {
                **FLOWER,
                **netpol,
                "redis": {"enabled": False},
                "externalRedis": {
                    "existingSecret": "r",
                    "address": "redis.example:6380",
                    "sentinel": {"enabled": True, "hosts": ["s1:26379", "s2:26380", "s3:26379"]},
                },
            }
        )
        egress = one(external, "NetworkPolicy", "-flower")["spec"]["egress"][1]
        assert [p["port"] for p in egress["ports"]] == [6380, 26379, 26380]
        env = env_map(_flower(external))
        assert env["REDIS_SENTINEL_HOSTS"] == "s1:26379,s2:26380,s3:26379"


def _api_key(objects: list[dict[str, Any]]) -> str:
    data = one(objects, "Secret", "-api-keys")["data"]["api-keys"]
    return base64.b64decode(data).decode().split(",")[0]


def _start_flower(cluster: Cluster, port: int) -> tuple[Proc, str, tuple[str, str]]:
    """The rendered Flower container's args with its port swapped for a free one."""
    spec = _flower(cluster.objects)
    args = [
        str(port) if a == "5555" else "127.0.0.1" if a == "0.0.0.0" else a for a in spec["args"]
    ]
    env = cluster.env_for("-flower", "flower")
    user, _, password = (
        Path(env["TRUSTCARD_SECRETS_DIR"], "FLOWER_BASIC_AUTH").read_text().partition(":")
    )
    proc = Proc("flower", [TRUSTCARD, *args], env, cluster.workdir / "flower.log").start()
    cluster.processes.append(proc)
    base = f"http://127.0.0.1:{port}"
    probe = spec["readinessProbe"]["httpGet"]["path"]

    def ready() -> bool:
        assert proc.alive(), proc.log()[-3000:]
        try:
            return httpx.get(base + probe, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 60, what="the rendered Flower's readiness probe")
    metrics = base + probe.replace("healthcheck", "metrics")
    wait_until(lambda: receives_events(metrics), 30, 0.2, what="Flower to receive events")
    return proc, base, (user, password)


def _flower_sees_a_task_through_the_api(
    cluster: Cluster, api_base: str, flower: str, credentials: tuple[str, str], prefix: str = ""
) -> None:
    headers = {"X-API-Key": _api_key(cluster.objects)}
    submitted = httpx.post(
        f"{api_base}/tasks/test/add", params={"x": 5, "y": 3}, headers=headers, timeout=10
    )
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]
    assert httpx.get(f"{flower}{prefix}/api/tasks", timeout=5).status_code == 401

    def succeeded() -> bool:
        tasks = httpx.get(f"{flower}{prefix}/api/tasks", auth=credentials, timeout=5).json()
        return bool(tasks.get(task_id, {}).get("state") == "SUCCESS")

    wait_until(succeeded, 60, interval=0.5, what="Flower to list the task as SUCCESS")
    # Workers come from a broadcast inspect (remote control over the same Redis).
    workers = wait_until(
        lambda: httpx.get(
            f"{flower}{prefix}/api/workers",
            params={"refresh": "true"},
            auth=credentials,
            timeout=10,
        ).json(),
        30,
        interval=0.5,
        what="Flower to list the worker",
    )
    assert [name.split("@")[0] for name in workers] == ["trustcard"]


def _wait_api(cluster: Cluster, api: Proc) -> str:
    base = f"http://127.0.0.1:{cluster.api_port}"

    def ready() -> bool:
        assert api.alive(), api.log()[-3000:]
        try:
            return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 60, what="the rendered API")
    return base


def _wait_worker(worker: Proc) -> None:
    wait_until(lambda: " ready." in worker.log() or not worker.alive(), 60, what="the worker")
    assert worker.alive(), worker.log()[-3000:]
    assert "task events: ON" in worker.log()


def test_rendered_flower_runs_with_its_generated_secret(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'trustcard.db'}"
    cluster = Cluster(
        tmp_path,
        database_url,
        {
            "config": {"enableTestEndpoints": True},
            "worker": {"taskEvents": True},
            "flower": {"enabled": True, "urlPrefix": "flower"},
        },
    )
    upgrade_database(database_url)
    cluster.redis.start()
    try:
        api = cluster.start("-api", "api")
        worker = cluster.start("-worker", "worker")
        api_base = _wait_api(cluster, api)
        _wait_worker(worker)
        _, flower, credentials = _start_flower(cluster, free_port())
        assert credentials[0] == "admin"
        _flower_sees_a_task_through_the_api(cluster, api_base, flower, credentials, "/flower")
        # The ServiceMonitor's path, open like the probe's.
        metrics = httpx.get(f"{flower}/flower/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "flower_events_total" in metrics.text
    finally:
        cluster.stop()


class FlowerProductionCluster(ProductionCluster):
    """k8s/values-production.yaml (external TLS Redis) plus Flower with the operator's Secret."""

    def __init__(self, workdir: Path, redis: TlsRedisServer, database_url: str) -> None:
        super().__init__(workdir, redis, database_url)
        # The Secrets the operator made (database, Redis URL, Redis CA), appended last.
        operator_secrets = self.objects[-3:]
        assert [o["kind"] for o in operator_secrets] == ["Secret"] * 3
        values = yaml.safe_load((ROOT / "k8s" / "values-production.yaml").read_text())
        values["config"] = {"enableTestEndpoints": True}
        values["worker"] = {**values.get("worker", {}), "taskEvents": True}
        values["flower"] = {"enabled": True, "auth": {"existingSecret": "ops-flower"}}
        self.objects = render_chart(values) + operator_secrets
        self.objects.append(_secret("ops-flower", {"basic-auth": "ops:tls-flower-secret"}))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def production(tmp_path: Path, pki: Pki) -> Iterator[FlowerProductionCluster]:
    redis = TlsRedisServer(
        data_dir=tmp_path / "redis", pki=pki, password="managed-secret", auth_clients=False
    ).start()
    database_url = f"sqlite:///{tmp_path / 'trustcard.db'}"
    upgrade_database(database_url)
    cluster = FlowerProductionCluster(tmp_path, redis, database_url)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_rendered_flower_reads_a_tls_redis(production: FlowerProductionCluster) -> None:
    """Flower's broker connection and event receiver verify the managed Redis's certificate
    with the mounted CA (REDIS_TLS_CA_FILE), like the worker's."""
    env = production.env_for("-flower", "flower")
    assert env["REDIS_TLS_CA_FILE"].endswith("secrets-flower/redis-tls/ca.crt")
    api = production.start("-api", "api")
    worker = production.start("-worker", "worker")
    api_base = _wait_api(production, api)
    _wait_worker(worker)
    proc, flower, credentials = _start_flower(production, free_port())
    assert credentials == ("ops", "tls-flower-secret")
    _flower_sees_a_task_through_the_api(production, api_base, flower, credentials)
    assert "rediss://" in proc.log()
