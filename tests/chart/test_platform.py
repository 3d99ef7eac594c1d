"""The chart in platform teams' hands: umbrella charts, GitOps renders, registries, labels."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.helm import CHART, RenderError, by_kind, container, find_tool, one, render_chart

POD_KINDS = {"Deployment", "StatefulSet", "Job"}
DIGEST = "sha256:" + "0123456789abcdef" * 4
EXISTING_SECRETS = {
    "secrets": {"generate": False},
    "redis": {"auth": {"existingSecret": "trustcard-redis"}},
    "api": {"auth": {"existingSecret": "trustcard-api-keys"}},
    "database": {"bundled": {"existingSecret": "trustcard-postgresql"}},
}
MONITORING_ON = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
}


def _pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = [obj["spec"]["template"]["spec"] for obj in objects if obj["kind"] in POD_KINDS]
    specs += [obj["spec"] for obj in by_kind(objects, "Pod")]
    return specs


def _images(objects: list[dict[str, Any]]) -> set[str]:
    return {
        c["image"]
        for spec in _pod_specs(objects)
        for c in spec.get("initContainers", []) + spec["containers"]
    }


def _validate_builtins(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if "monitoring.coreos.com" not in obj["apiVersion"] and "keda.sh" not in obj["apiVersion"]:
            kubernetes_validate.validate(obj, "1.35", strict=True)


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    helm = find_tool("helm")
    assert helm, "helm is not installed: run scripts/install-tools"
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def parent_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An umbrella chart that depends on this one through a file:// repository."""
    parent = tmp_path_factory.mktemp("umbrella") / "platform"
    parent.mkdir()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {
                        "name": "trustcard",
                        "version": chart["version"],
                        "repository": f"file://{CHART}",
                    }
                ],
            }
        )
    )
    built = _helm("dependency", "build", str(parent))
    assert built.returncode == 0, built.stderr
    assert list((parent / "charts").glob("trustcard-*.tgz"))
    return parent


def _render_parent(parent: Path, values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    values_file = tmp_path / "parent-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = _helm("template", "platform", str(parent), "-n", "apps", "-f", str(values_file))
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class TestUmbrellaChart:
    def test_a_parent_chart_without_globals_renders_and_validates(
        self, parent_chart: Path, tmp_path: Path
    ) -> None:
        objects = _render_parent(parent_chart, {}, tmp_path)
        _validate_builtins(objects)
        one(objects, "Deployment", "-trustcard-worker")

    def test_globals_reach_every_pod(self, parent_chart: Path, tmp_path: Path) -> None:
        values = {
            "global": {
                "imageRegistry": "registry.corp.example",
                "imagePullSecrets": ["corp-pull", {"name": "corp-pull-2"}],
                "storageClass": "fast",  # another chart's global: must be accepted, not refused
            },
            "trustcard": {"imagePullSecrets": [{"name": "own-pull"}]},
        }
        objects = _render_parent(parent_chart, values, tmp_path)
        _validate_builtins(objects)
        images = _images(objects)
        assert images
        assert all(i.startswith("registry.corp.example/") for i in images), images
        for spec in _pod_specs(objects):
            names = [s["name"] for s in spec["imagePullSecrets"]]
            assert names == ["own-pull", "corp-pull", "corp-pull-2"]

    def test_global_alone_is_accepted_by_the_strict_schema(self) -> None:
        objects = render_chart({"global": {"foo": 1}})
        assert by_kind(objects, "Deployment")


class TestGitOpsSecrets:
    def test_the_same_values_render_byte_identical(self) -> None:
        values_file = CHART.parent.parent / ".tools" / "gitops-values.yaml"
        values_file.parent.mkdir(exist_ok=True)
        values_file.write_text(yaml.safe_dump(EXISTING_SECRETS))
        try:
            renders = [
                _helm("template", "r", str(CHART), "-n", "t", "-f", str(values_file))
                for _ in range(2)
            ]
        finally:
            values_file.unlink()
        assert all(r.returncode == 0 for r in renders), renders[0].stderr
        assert renders[0].stdout == renders[1].stdout
        assert "kind: Secret\n" not in renders[0].stdout

    def test_generate_false_without_existing_secrets_refuses_in_one_line(self) -> None:
        with pytest.raises(RenderError) as error:
            render_chart({"secrets": {"generate": False}})
        (line,) = [ln for ln in str(error.value).splitlines() if ln.startswith("Error:")]
        for value in [
            "redis.auth.existingSecret",
            "api.auth.existingSecret",
            "database.bundled.existingSecret",
        ]:
            assert value in line

    def test_an_argo_cd_render_without_a_cluster_refuses_generated_secrets(self) -> None:
        result = _helm("template", "r", str(CHART), "--api-versions", "argoproj.io/v1alpha1")
        assert result.returncode != 0
        assert "rendered for Argo CD" in result.stderr
        assert "secrets.generate=false" in result.stderr
        values_file = CHART.parent.parent / ".tools" / "argo-values.yaml"
        values_file.write_text(yaml.safe_dump(EXISTING_SECRETS))
        try:
            ok = _helm(
                "template",
                "r",
                str(CHART),
                "--api-versions",
                "argoproj.io/v1alpha1",
                "-f",
                str(values_file),
            )
        finally:
            values_file.unlink()
        assert ok.returncode == 0, ok.stderr

    def test_bundled_postgresql_uses_its_existing_secret(self) -> None:
        objects = render_chart(EXISTING_SECRETS)
        assert not [
            s for s in by_kind(objects, "Secret") if s["metadata"]["name"].endswith("-database")
        ]
        postgres = one(objects, "StatefulSet", "-postgresql")
        volumes = postgres["spec"]["template"]["spec"]["volumes"]
        assert "trustcard-postgresql" in yaml.safe_dump(volumes)
        for name in ["-api", "-worker"]:
            secrets = one(objects, "Deployment", name)["spec"]["template"]["spec"]["volumes"]
            assert "trustcard-postgresql" in yaml.safe_dump(secrets)


class TestPlatformValues:
    def test_registry_repository_and_digest(self) -> None:
        objects = render_chart(
            {"image": {"registry": "reg.example/mirror", "tag": "1.2.3", "digest": DIGEST}}
        )
        api = container(one(objects, "Deployment", "-api"), "api")
        assert api["image"] == f"reg.example/mirror/ghcr.io/trustcard/trustcard@{DIGEST}"
        tagged = container(
            one(render_chart({"image": {"tag": "1.2.3"}}), "Deployment", "-api"), "api"
        )
        assert tagged["image"] == "ghcr.io/trustcard/trustcard:1.2.3"

    def test_a_malformed_digest_is_refused(self) -> None:
        with pytest.raises(RenderError, match="digest"):
            render_chart({"image": {"digest": "latest"}})

    @pytest.mark.parametrize("component", ["api", "worker", "exporter"])
    def test_priority_class_and_extras_on_each_component(self, component: str) -> None:
        sidecar = {"name": "proxy", "image": "envoyproxy/envoy:v1.31.0"}
        values = {
            component: {
                "priorityClassName": "platform-high",
                "extraEnvFrom": [{"secretRef": {"name": "extra-env"}}],
                "extraVolumes": [{"name": "extra", "configMap": {"name": "extra"}}],
                "extraVolumeMounts": [{"name": "extra", "mountPath": "/etc/extra"}],
                "extraContainers": [sidecar],
            }
        }
        objects = render_chart(values)
        _validate_builtins(objects)
        deployment = one(objects, "Deployment", f"-{component}")
        spec = deployment["spec"]["template"]["spec"]
        assert spec["priorityClassName"] == "platform-high"
        assert {"name": "extra", "configMap": {"name": "extra"}} in spec["volumes"]
        main = container(deployment, component)
        assert {"secretRef": {"name": "extra-env"}} in main["envFrom"]
        assert {"name": "extra", "mountPath": "/etc/extra"} in main["volumeMounts"]
        assert spec["containers"][-1] == sidecar
        others = [o for o in objects if o["kind"] == "Deployment" and o is not deployment]
        assert all("priorityClassName" not in o["spec"]["template"]["spec"] for o in others)

    def test_common_labels_on_every_object(self) -> None:
        values = {
            "commonLabels": {"team": "trust", "cost-center": "42"},
            "monitoring": MONITORING_ON,
            "api": {"ingress": {"enabled": True}},
        }
        objects = render_chart(values)
        unlabelled = [
            f"{o['kind']}/{o['metadata']['name']}"
            for o in objects
            if o["metadata"].get("labels", {}).get("team") != "trust"
        ]
        assert unlabelled == []
        for obj in objects:
            selector = obj.get("spec", {}).get("selector", {})
            assert "team" not in selector.get("matchLabels", selector)

    def test_monitoring_labels_set_once_reach_every_monitoring_object(self) -> None:
        monitoring = {**MONITORING_ON, "labels": {"release": "kube-prometheus-stack"}}
        monitoring["podMonitor"] = {"enabled": True, "labels": {"release": "own"}}
        objects = render_chart({"monitoring": monitoring})
        kinds = ["ServiceMonitor", "PrometheusRule"]
        labelled = [o for o in objects if o["kind"] in kinds]
        labelled.append(one(objects, "ConfigMap", "-dashboard"))
        assert len(labelled) >= 4
        assert all(o["metadata"]["labels"]["release"] == "kube-prometheus-stack" for o in labelled)
        assert one(objects, "PodMonitor")["metadata"]["labels"]["release"] == "own"


def test_packaged_dependency_has_no_stray_files(parent_chart: Path, tmp_path: Path) -> None:
    """What an umbrella chart vendors: the package, not the repository's test files."""
    (package,) = (parent_chart / "charts").glob("trustcard-*.tgz")
    shutil.unpack_archive(package, tmp_path)
    names = {p.name for p in (tmp_path / "trustcard").iterdir()}
    assert {"Chart.yaml", "values.yaml", "values.schema.json", "templates"} <= names
