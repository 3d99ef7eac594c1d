"""The chart's commands are real: run the rendered api, worker, probes and helm-test pod locally.

Only what a cluster provides is swapped: service hostnames and ports become loopback ones, and
mounted paths (/run/secrets/trustcard, /tmp) become temporary directories.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chart.helm import ROOT, container, one, render_chart
from tests.metrics_text import scrape, value
from tests.stack import Proc, wait_until
from trustcard.local_redis import RedisServer, free_port

TRUSTCARD = str(Path(sys.executable).parent / "trustcard")


def test_the_image_entrypoint_is_trustcard() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["trustcard"\]$', dockerfile, re.MULTILINE)


class Cluster:
    """The rendered objects plus the local stand-ins for what Kubernetes would provide."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.objects = render_chart({"config": {"enableTestEndpoints": True}})
        secret = one(self.objects, "Secret", "-redis")
        self.password = base64.b64decode(secret["data"]["redis-password"]).decode()
        self.redis = RedisServer(data_dir=workdir / "redis", password=self.password)
        self.api_port = free_port()
        self.exporter_port = free_port()
        self.worker_metrics_port = free_port()
        self.processes: list[Proc] = []

    def env_for(self, deployment: str, name: str) -> dict[str, str]:
        """The container's environment as Kubernetes would build it, with local paths/hosts."""
        spec = container(one(self.objects, "Deployment", deployment), name)
        env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
        for source in spec.get("envFrom", []):
            config = one(self.objects, "ConfigMap", source["configMapRef"]["name"])
            env.update(config["data"])
        for item in spec.get("env", []):
            assert "valueFrom" not in item, f"{item['name']}: secrets must come as files"
            env[item["name"]] = item["value"]
        secrets_dir = self.workdir / f"secrets-{name}"
        secrets_dir.mkdir(exist_ok=True)
        volume = next(
            v
            for v in one(self.objects, "Deployment", deployment)["spec"]["template"]["spec"][
                "volumes"
            ]
            if v["name"] == "secrets"
        )
        for source in volume["projected"]["sources"]:
            secret = one(self.objects, "Secret", source["secret"]["name"])
            for entry in source["secret"]["items"]:
                value = base64.b64decode(secret["data"][entry["key"]]).decode()
                (secrets_dir / entry["path"]).write_text(value)
        env["TRUSTCARD_SECRETS_DIR"] = str(secrets_dir)
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
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    local = Cluster(Path(tmp_path_factory.mktemp("rendered")))
    local.redis.start()
    try:
        yield local
    finally:
        local.stop()


def _probe_command(cluster: Cluster, probe: str) -> list[str]:
    spec: dict[str, Any] = container(one(cluster.objects, "Deployment", "-worker"), "worker")
    command: list[str] = spec[probe]["exec"]["command"]
    assert command[0] == "trustcard"
    return [TRUSTCARD, *command[1:]]


def test_rendered_api_worker_probes_and_helm_test_work_together(cluster: Cluster) -> None:
    import subprocess

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
