"""The image, built from the Dockerfile and run as the rendered chart runs it.

The chart is rendered with helm; the migration Job, the api/worker/exporter Deployments (init
containers first) and the helm-test pod run as podman containers with what their manifests say:
args and command, the ConfigMap and env, user and group, read-only root with the chart's emptyDir
mounts as tmpfs (nothing else writable), all capabilities dropped, no privilege escalation,
resource limits, and the Secrets as files in a read-only bind mount. Probes run as the kubelet
would: exec probes with `podman exec`, HTTP probes against the port.

Only what a cluster provides is swapped: containers share the host's network, so Service names
resolve to 127.0.0.1 (--add-host) and ports become free loopback ones; Redis is a redis-server
this test starts; the database URL points at a scratch PostgreSQL database. The migration Job's
wait-for-postgresql init container uses the postgres image, not this one: it is not run here
(tests/chart/test_rendered_commands.py runs its script).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chart.helm import one, render_chart
from tests.image.podman import (
    RUN_LIMITS,
    build_image,
    ensure_base_image,
    find_podman,
    image_size,
    podman,
)
from tests.metrics_text import scrape, value
from tests.postgres_server import admin_dsn, scratch_database
from tests.stack import wait_until
from trustcard.local.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CHART_IMAGE = "ghcr.io/trustcard/trustcard:"
# Keys of a rendered container this test translates to podman; anything else fails the test
# (a new field in the chart must be run here too, or consciously left out).
CONTAINER_KEYS = {
    "name", "image", "imagePullPolicy", "command", "args", "ports", "env", "envFrom",
    "startupProbe", "livenessProbe", "readinessProbe", "resources", "securityContext",
    "volumeMounts",
}  # fmt: skip
SECURITY_KEYS = {
    "allowPrivilegeEscalation",
    "capabilities",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
}
POD_SECURITY_KEYS = {"fsGroup", "runAsGroup", "runAsNonRoot", "runAsUser", "seccompProfile"}
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _require_podman() -> None:
    if find_podman() is None:
        message = "podman is not installed (Debian packages podman, runc, debootstrap)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _bytes(quantity: str) -> int:
    for suffix, factor in UNITS.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def _cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


class RenderedCluster:
    """The rendered objects, run as podman containers on the host's network."""

    def __init__(self, image: str, workdir: Path, database_url: str) -> None:
        self.image = image
        self.workdir = workdir
        self.database_url = database_url
        self.objects = render_chart({"config": {"enableTestEndpoints": True}})
        self.run_id = f"trustcard-image-{os.getpid()}"
        password = self.secret("-redis", "redis-password")
        self.redis = RedisServer(data_dir=workdir / "redis", password=password)
        # What each rendered port number becomes on the shared host network.
        self.ports = {8000: free_port(), 9808: free_port(), 9809: free_port()}
        self.hosts = [s["metadata"]["name"] for s in self.objects if s["kind"] == "Service"]
        self.containers: list[str] = []

    def secret(self, suffix: str, key: str) -> str:
        return base64.b64decode(one(self.objects, "Secret", suffix)["data"][key]).decode()

    def pod(self, kind: str, suffix: str) -> dict[str, Any]:
        workload = one(self.objects, kind, suffix)
        spec: dict[str, Any] = (
            workload["spec"] if kind == "Pod" else workload["spec"]["template"]["spec"]
        )
        return spec

    def swap(self, value: str) -> str:
        """Rendered ports -> this run's (URLs and bare numbers); 0.0.0.0 -> loopback only."""
        if value == "0.0.0.0":
            return "127.0.0.1"
        if value.isdigit() and int(value) in self.ports:
            return str(self.ports[int(value)])
        value = re.sub(r"(redis://[^/]+-redis):6379", rf"\1:{self.redis.port}", value)
        # The API Service's port 80 targets the pod's port 8000.
        return re.sub(r"(http://[^/]+-api):80\b", rf"\1:{self.ports[8000]}", value)

    def podman_args(self, pod: dict[str, Any], spec: dict[str, Any], name: str) -> list[str]:
        """`podman run` options for a rendered container of a rendered pod."""
        assert set(spec) <= CONTAINER_KEYS, f"{name}: not run here: {set(spec) - CONTAINER_KEYS}"
        assert spec["image"].startswith(CHART_IMAGE), spec["image"]
        security = pod["securityContext"]
        assert set(security) <= POD_SECURITY_KEYS, set(security) - POD_SECURITY_KEYS
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default
        user, group = security["runAsUser"], security["runAsGroup"]
        assert user != 0
        assert security["runAsNonRoot"]
        args = [f"--name={self.run_id}-{name}", f"--hostname={name}", "--network=host"]
        args += [f"--add-host={host}:127.0.0.1" for host in self.hosts]
        args += [*RUN_LIMITS, f"--user={user}:{group}", f"--group-add={security['fsGroup']}"]
        context = spec["securityContext"]
        assert set(context) <= SECURITY_KEYS, set(context) - SECURITY_KEYS
        assert context["readOnlyRootFilesystem"]
        assert context["runAsNonRoot"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        # Read-only root and only the chart's volumes writable (no tmpfs of podman's own).
        args += ["--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL"]
        args += ["--security-opt=no-new-privileges"]
        limits = spec["resources"]["limits"]
        args += [f"--memory={_bytes(limits['memory'])}", f"--cpus={_cpus(limits['cpu'])}"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        secrets_dir: Path | None = None
        for mount in spec.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                size = _bytes(volume["emptyDir"]["sizeLimit"])
                args.append(
                    f"--mount=type=tmpfs,destination={mount['mountPath']},tmpfs-size={size}"
                )
            else:
                assert mount.get("readOnly") is True, mount
                secrets_dir = self.secret_files(volume, name, security["fsGroup"])
                args.append(f"--volume={secrets_dir}:{mount['mountPath']}:ro")
        env = self.env(spec)
        if secrets_dir is None:
            assert "TRUSTCARD_SECRETS_DIR" not in env or not spec.get("volumeMounts")
        args += [f"--env={key}={setting}" for key, setting in env.items()]
        if "command" in spec:
            args.append(f"--entrypoint={json.dumps(spec['command'])}")
        return [*args, self.image, *(self.swap(a) for a in spec.get("args", []))]

    def env(self, spec: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in spec.get("envFrom", []):
            env.update(one(self.objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        for item in spec.get("env", []):
            assert "valueFrom" not in item, f"{item['name']}: secrets must come as files"
            env[item["name"]] = self.swap(item["value"])
        return env

    def secret_files(self, volume: dict[str, Any], name: str, fs_group: int) -> Path:
        """A projected Secret volume as the kubelet writes it: root-owned files of the pod's
        fsGroup with defaultMode plus group read."""
        projected = volume["projected"]
        folder = self.workdir / f"secrets-{name}"
        folder.mkdir(mode=0o755)
        for source in projected["sources"]:
            secret = one(self.objects, "Secret", source["secret"]["name"])
            for item in source["secret"]["items"]:
                value = base64.b64decode(secret["data"][item["key"]]).decode()
                if item["path"] == "DATABASE_URL":
                    assert value.startswith("postgresql+psycopg://trustcard:"), value
                    value = self.database_url
                path = folder / item["path"]
                path.write_text(value)
                os.chown(path, 0, fs_group)
                path.chmod(projected["defaultMode"] | 0o040)
        return folder

    def run_to_completion(self, pod: dict[str, Any], spec: dict[str, Any], name: str) -> str:
        """A Job's container or an init container: exit 0 expected; its output."""
        result = podman(
            ["run", "--rm", *self.podman_args(pod, spec, name)], timeout=180, check=False
        )
        output = (result.stdout + result.stderr).decode(errors="replace")
        assert result.returncode == 0, f"{name} exited {result.returncode}:\n{output[-4000:]}"
        return output

    def start_deployment(self, suffix: str, component: str) -> str:
        """Init containers to completion, then the main container detached; its name."""
        pod = self.pod("Deployment", suffix)
        for init in pod.get("initContainers", []):
            self.run_to_completion(pod, init, f"{component}-{init['name']}")
        spec = next(c for c in pod["containers"] if c["name"] == component)
        name = f"{self.run_id}-{component}"
        self.containers.append(name)
        podman(["run", "--detach", *self.podman_args(pod, spec, component)], timeout=120)
        return name

    def logs(self, name: str) -> str:
        result = podman(["logs", name], check=False)
        return (result.stdout + result.stderr).decode(errors="replace")

    def running(self, name: str) -> bool:
        state = podman(["inspect", "--format", "{{.State.Running}}", name], check=False)
        return state.stdout.decode().strip() == "true"

    def stop(self) -> None:
        for name in reversed(self.containers):
            # Kept beside the test's other files: what to read when CI fails here.
            (self.workdir / f"{name}.log").write_text(self.logs(name))
            podman(["rm", "--force", "--time=0", name], check=False)
        self.redis.stop()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    _require_podman()
    base = ensure_base_image()
    log = Path(tmp_path_factory.mktemp("build")) / "build.log"
    image_id, seconds = build_image(log)
    size = image_size(image_id)
    print(f"\nbase: {base}; image built in {seconds:.0f} s, {size / 1e6:.0f} MB")
    return image_id


@pytest.fixture(scope="module")
def cluster(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RenderedCluster]:
    with admin_dsn() as admin, scratch_database(admin) as url:
        local = RenderedCluster(image, Path(tmp_path_factory.mktemp("image-run")), url)
        local.redis.start()
        try:
            yield local
        finally:
            local.stop()


def _http_probes(cluster: RenderedCluster, component: str) -> None:
    """Every HTTP probe of the container passes against its (swapped) port."""
    spec = next(c for c in cluster.pod("Deployment", f"-{component}")["containers"])
    name = f"{cluster.run_id}-{component}"
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe not in spec:
            continue
        get = spec[probe]["httpGet"]
        url = f"http://127.0.0.1:{cluster.ports[ports[get['port']]]}{get['path']}"

        timeout = spec[probe].get("timeoutSeconds", 1)  # the kubelet's default: 1 s

        def passes(url: str = url, timeout: float = timeout) -> bool:
            assert cluster.running(name), cluster.logs(name)[-3000:]
            try:
                return httpx.get(url, timeout=timeout).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(passes, 90, interval=0.5, what=f"the {component} {probe} ({url})")


def test_the_image_runs_as_the_chart_runs_it(cluster: RenderedCluster) -> None:
    # The migration Job (its main container; see the module docstring for its init container).
    job = cluster.pod("Job", "-migrate-1")
    migrated = cluster.run_to_completion(job, job["containers"][0], "migrate")
    assert "Running upgrade" in migrated or "at head" in migrated, migrated[-2000:]

    # API and worker, after their wait-for-schema init containers; the exporter.
    api = cluster.start_deployment("-api", "api")
    worker = cluster.start_deployment("-worker", "worker")
    exporter = cluster.start_deployment("-exporter", "exporter")
    _http_probes(cluster, "api")
    _http_probes(cluster, "exporter")

    worker_spec = cluster.pod("Deployment", "-worker")["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = worker_spec[probe]["exec"]["command"]

        def exec_probe_passes(command: list[str] = command) -> bool:
            assert cluster.running(worker), cluster.logs(worker)[-3000:]
            return podman(["exec", worker, *command], timeout=30, check=False).returncode == 0

        wait_until(exec_probe_passes, 120, interval=1, what=f"the worker {probe} {command}")

    # The helm-test pod: test.add(5, 3) through the API, with the key from its Secret file.
    test_pod = cluster.pod("Pod", "-test-submit-add")
    smoke = cluster.run_to_completion(test_pod, test_pod["containers"][0], "helm-test")
    assert "ok: test.add(5, 3) = 8" in smoke, smoke

    # The worker's /metrics on its (swapped) port and the exporter's queue depth.
    worker_metrics = scrape(f"http://127.0.0.1:{cluster.ports[9808]}/metrics")
    assert value(worker_metrics, "trustcard_task_succeeded_total", task_name="test.add") == 1
    exported = scrape(f"http://127.0.0.1:{cluster.ports[9809]}/metrics")
    assert value(exported, "trustcard_queue_exporter_redis_up") == 1

    # SIGTERM, as the kubelet sends it within terminationGracePeriodSeconds: the running 5 s
    # task finishes, the worker exits 0.
    key = cluster.secret("-api-keys", "api-keys").split(",")[0].strip()
    base = f"http://127.0.0.1:{cluster.ports[8000]}"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        submitted = client.post("/tasks/test/sleep", params={"seconds": 5}, timeout=10)
        assert submitted.status_code == 202, submitted.text
        task_url = f"/tasks/{submitted.json()['task_id']}"

        def status() -> str:
            return str(client.get(task_url, timeout=10).json()["status"])

        wait_until(lambda: status() == "processing", 30, interval=0.1, what="the 5 s task")
        grace = cluster.pod("Deployment", "-worker")["terminationGracePeriodSeconds"]
        started = time.monotonic()
        podman(["stop", f"--time={grace}", worker], timeout=grace + 30)
        stopped_after = time.monotonic() - started
        exit_code = podman(["inspect", "--format", "{{.State.ExitCode}}", worker]).stdout
        assert exit_code.decode().strip() == "0", cluster.logs(worker)[-3000:]
        assert stopped_after < grace
        finished = client.get(task_url, timeout=10).json()
        assert finished["status"] == "completed", finished
        assert finished["result"]["slept_seconds"] >= 5
    assert "warm shutdown" in cluster.logs(worker).lower()
    print(f"\nworker stopped {stopped_after:.1f} s after SIGTERM, the 5 s task completed")
    assert cluster.running(api)
    assert cluster.running(exporter)
    # The locked (newest) dependencies warn about nothing the code does (redis 8.2 warned once
    # about a synchronous Retry given to the API's asyncio clients).
    for name in (api, worker, exporter):
        warned = [line for line in cluster.logs(name).splitlines() if "Warning:" in line]
        assert warned == [], f"{name}: {warned}"
