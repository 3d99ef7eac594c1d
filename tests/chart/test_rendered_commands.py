"""The chart's commands are real: run the rendered migration Job, init containers, api, worker,
probes and helm-test pod locally, against a real Redis and a real PostgreSQL (or SQLite).

Only what a cluster provides is swapped: service hostnames and ports become loopback ones, the
bundled database's URL becomes a scratch database's, and mounted paths (/run/secrets/trustcard,
/tmp) become temporary directories.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.chart.helm import ROOT, container, one, render_chart
from tests.metrics_text import scrape, value
from tests.postgres_server import admin_dsn, find_bindir, scratch_database
from tests.stack import Proc, wait_until
from trustcard.local.redis_server import RedisServer, free_port

TRUSTCARD = str(Path(sys.executable).parent / "trustcard")
# What the rendered Secret's DATABASE_URL points at (the bundled PostgreSQL's Service).
RENDERED_DATABASE = "@release-trustcard-postgresql:5432/trustcard"


def test_the_image_entrypoint_is_trustcard() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["trustcard"\]$', dockerfile, re.MULTILINE)


class Cluster:
    """The rendered objects plus the local stand-ins for what Kubernetes would provide."""

    def __init__(
        self, workdir: Path, database_url: str, values: dict[str, Any] | None = None
    ) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.objects = render_chart({"config": {"enableTestEndpoints": True}, **(values or {})})
        secret = one(self.objects, "Secret", "-redis")
        self.password = base64.b64decode(secret["data"]["redis-password"]).decode()
        self.redis = RedisServer(data_dir=workdir / "redis", password=self.password)
        self.api_port = free_port()
        self.exporter_port = free_port()
        self.worker_metrics_port = free_port()
        self.processes: list[Proc] = []

    def env_for(self, deployment: str, name: str, kind: str = "Deployment") -> dict[str, str]:
        """The container's environment as Kubernetes would build it, with local paths/hosts."""
        workload = one(self.objects, kind, deployment)
        pod = workload["spec"]["template"]["spec"]
        spec = next(
            c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name
        )
        # The image's PATH has `trustcard` (scripts of init containers call it by name).
        env = {"PATH": f"{Path(TRUSTCARD).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
        for source in spec.get("envFrom", []):
            config = one(self.objects, "ConfigMap", source["configMapRef"]["name"])
            env.update(config["data"])
        for item in spec.get("env", []):
            assert "valueFrom" not in item, f"{item['name']}: secrets must come as files"
            env[item["name"]] = item["value"]
        secrets_dir = self.workdir / f"secrets-{name}"
        secrets_dir.mkdir(exist_ok=True)
        volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
        for source in volume["projected"]["sources"]:
            secret = one(self.objects, "Secret", source["secret"]["name"])
            for entry in source["secret"]["items"]:
                value = base64.b64decode(secret["data"][entry["key"]]).decode()
                if entry["path"] == "DATABASE_URL":
                    value = self.local_database(value)
                # Paths may have folders (redis-tls/ca.crt), as in a projected volume.
                (secrets_dir / entry["path"]).parent.mkdir(exist_ok=True)
                (secrets_dir / entry["path"]).write_text(value)
        env["TRUSTCARD_SECRETS_DIR"] = str(secrets_dir)
        # Settings that name files of the secrets volume (REDIS_TLS_CA_FILE ...) follow it.
        for key, setting in env.items():
            if setting.startswith("/run/secrets/trustcard/"):
                env[key] = setting.replace("/run/secrets/trustcard", str(secrets_dir), 1)
        if "REDIS_URL" in env:
            env["REDIS_URL"] = env["REDIS_URL"].replace(
                "release-trustcard-redis:6379", f"127.0.0.1:{self.redis.port}"
            )
        if "WORKER_HEARTBEAT_FILE" in env:
            env["WORKER_HEARTBEAT_FILE"] = str(self.workdir / "heartbeat")
        if "WORKER_METRICS_PORT" in env:
            assert env["WORKER_METRICS_HOST"] == "0.0.0.0"  # scrapable from other pods
            env["WORKER_METRICS_HOST"] = "127.0.0.1"
            env["WORKER_METRICS_PORT"] = str(self.worker_metrics_port)
        return env

    def local_database(self, rendered: str) -> str:
        """The rendered URL (user, generated password, Service, database) -> the local one."""
        password = base64.b64decode(
            one(self.objects, "Secret", "-database")["data"]["postgres-password"]
        ).decode()
        assert rendered == f"postgresql+psycopg://trustcard:{password}{RENDERED_DATABASE}"
        return self.database_url

    def script(self, kind: str, workload: str, name: str) -> list[str]:
        """An init container's `sh -c` command line, as rendered."""
        pod = one(self.objects, kind, workload)["spec"]["template"]["spec"]
        command: list[str] = next(c for c in pod["initContainers"] if c["name"] == name)["command"]
        assert command[:2] == ["sh", "-c"]
        return command

    def args_for(self, deployment: str, name: str) -> list[str]:
        args: list[str] = container(one(self.objects, "Deployment", deployment), name)["args"]
        ports = {"8000": str(self.api_port), "9809": str(self.exporter_port)}
        swapped = [ports.get(arg, arg) for arg in args]
        return ["127.0.0.1" if arg == "0.0.0.0" else arg for arg in swapped]

    def start(self, deployment: str, name: str) -> Proc:
        proc = Proc(
            name,
            [TRUSTCARD, *self.args_for(deployment, name)],
            self.env_for(deployment, name),
            self.workdir / f"{name}.log",
        ).start()
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A scratch database on the running PostgreSQL, or on a throwaway one."""
    with admin_dsn() as admin, scratch_database(admin) as url:
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Cluster]:
    local = Cluster(Path(tmp_path_factory.mktemp("rendered")), postgres_url)
    local.redis.start()
    try:
        yield local
    finally:
        local.stop()


def _pg_isready() -> str:
    found = shutil.which("pg_isready")
    bindir = find_bindir()
    if found is None and bindir is not None and (bindir / "pg_isready").is_file():
        found = str(bindir / "pg_isready")
    if found is None:
        message = "pg_isready not found: install Debian's postgresql-client"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _migrate(cluster: Cluster) -> None:
    """The rendered migration Job: its wait for PostgreSQL, then its `trustcard db upgrade`."""
    job = one(cluster.objects, "Job")
    local = urlsplit(cluster.database_url)
    wait = cluster.script("Job", "-migrate-1", "wait-for-postgresql")
    script = wait[2].replace(
        "pg_isready --host release-trustcard-postgresql --port 5432",
        f"{_pg_isready()} --host {local.hostname} --port {local.port}",
    )
    assert script != wait[2]
    waited = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "accepting connections" in waited.stdout
    args = container(job, "migrate")["args"]
    migrated = subprocess.run(
        [TRUSTCARD, *args],
        env=cluster.env_for("-migrate-1", "migrate", kind="Job"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr


def test_init_containers_wait_for_the_migration_job_on_postgres(cluster: Cluster) -> None:
    """A fresh install: api and worker init containers block until the Job has migrated."""
    waiting = {
        name: subprocess.Popen(
            cluster.script("Deployment", f"-{name}", "wait-for-schema"),
            env=cluster.env_for(f"-{name}", "wait-for-schema"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("api", "worker")
    }
    try:
        time.sleep(3)
        for name, process in waiting.items():
            assert process.poll() is None, f"{name} did not wait: {process.communicate()[0]}"
        _migrate(cluster)
        for name, process in waiting.items():
            output = process.communicate(timeout=30)[0]
            assert process.returncode == 0, f"{name}: {output}"
            # It said why it waited (no schema yet), then that the schema is at head.
            assert "database schema is empty (no migrations applied)" in output, output
            assert output.rstrip().splitlines()[-1].startswith("database schema is at head")
    finally:
        for process in waiting.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_init_container_gives_up_readably_and_the_job_migrates_sqlite(tmp_path: Path) -> None:
    """waitTimeoutSeconds bounds the wait; the same rendered commands work on SQLite."""
    sqlite = Cluster(
        tmp_path,
        f"sqlite:///{tmp_path / 'trustcard.db'}",
        {"database": {"migrations": {"waitTimeoutSeconds": 10}}},
    )
    command = sqlite.script("Deployment", "-worker", "wait-for-schema")
    env = sqlite.env_for("-worker", "wait-for-schema")
    started = time.monotonic()
    gave_up = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert gave_up.returncode == 1
    assert 10 <= time.monotonic() - started < 30
    assert "not at head after 10 s: see the migration Job's logs" in gave_up.stderr
    migrated = subprocess.run(
        [TRUSTCARD, *container(one(sqlite.objects, "Job"), "migrate")["args"]],
        env=sqlite.env_for("-migrate-1", "migrate", kind="Job"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    passed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr


def _probe_command(cluster: Cluster, probe: str) -> list[str]:
    spec: dict[str, Any] = container(one(cluster.objects, "Deployment", "-worker"), "worker")
    command: list[str] = spec[probe]["exec"]["command"]
    assert command[0] == "trustcard"
    return [TRUSTCARD, *command[1:]]


def test_rendered_api_worker_probes_and_helm_test_work_together(cluster: Cluster) -> None:
    # The api and worker refuse a database whose schema is not at head: the Job runs first
    # (again, when the test above ran: `db upgrade` at head changes nothing).
    _migrate(cluster)
    api = cluster.start("-api", "api")
    worker = cluster.start("-worker", "worker")
    base = f"http://127.0.0.1:{cluster.api_port}"

    api_spec = container(one(cluster.objects, "Deployment", "-api"), "api")
    ready_path = api_spec["readinessProbe"]["httpGet"]["path"]
    live_path = api_spec["livenessProbe"]["httpGet"]["path"]

    def api_ready() -> bool:
        assert api.alive(), api.log()[-3000:]
        try:
            return httpx.get(base + ready_path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(api_ready, 60, what="the rendered API's readiness probe")
    assert httpx.get(base + live_path, timeout=2).status_code == 200

    worker_env = cluster.env_for("-worker", "worker")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):

        def probe_passes(probe: str = probe) -> bool:
            assert worker.alive(), worker.log()[-3000:]
            result = subprocess.run(
                _probe_command(cluster, probe), env=worker_env, capture_output=True, timeout=30
            )
            return result.returncode == 0

        wait_until(probe_passes, 60, interval=0.5, what=f"the worker {probe}")

    # The rendered config reached the processes (2 pool processes of our prefork pool).
    assert "concurrency: 2 (worker_pool)" in worker.log()

    # The helm-test pod's command, pointed at the local API instead of the Service.
    test_pod = one(cluster.objects, "Pod")
    args = [
        a.replace("http://release-trustcard-api:80", base)
        for a in test_pod["spec"]["containers"][0]["args"]
    ]
    # Its API key comes as a file from the same Secret as the API's (auth is on by default).
    pod_env = {e["name"]: e["value"] for e in test_pod["spec"]["containers"][0]["env"]}
    assert pod_env["TRUSTCARD_SECRETS_DIR"] == "/run/secrets/trustcard"
    pod_sources = test_pod["spec"]["volumes"][0]["projected"]["sources"]
    assert [s["secret"]["items"][0]["path"] for s in pod_sources] == ["API_KEYS"]
    unauthenticated = httpx.post(base + "/tasks/test/add", params={"x": 5, "y": 3}, timeout=5)
    assert unauthenticated.status_code == 401
    smoke = subprocess.run(
        [TRUSTCARD, *args],
        env=cluster.env_for("-api", "api"),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "ok: test.add(5, 3) = 8" in smoke.stdout

    # The worker, as rendered, serves its /metrics (the PodMonitor's target) and counted the smoke.
    worker_metrics = scrape(f"http://127.0.0.1:{cluster.worker_metrics_port}/metrics")
    assert value(worker_metrics, "trustcard_worker_up") == 1
    assert value(worker_metrics, "trustcard_task_succeeded_total", task_name="test.add") >= 1

    # The exporter, as rendered, reads the password-protected Redis and serves the HPA's metric.
    cluster.start("-exporter", "exporter")
    metrics_url = f"http://127.0.0.1:{cluster.exporter_port}/metrics"

    def exporter_reads_redis() -> bool:
        try:
            samples = scrape(metrics_url)
        except httpx.HTTPError:
            return False
        return value(samples, "trustcard_queue_exporter_redis_up") == 1

    wait_until(exporter_reads_redis, 30, what="the rendered exporter")
    assert ("trustcard_queue_depth", frozenset({("queue", "analysis")})) in scrape(metrics_url)
