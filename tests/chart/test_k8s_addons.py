"""skaffold.yaml and k8s/ parse, and refer to the chart, values and names that exist."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.helm import CHART, ROOT, find_tool, one, render_chart

K8S = ROOT / "k8s"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("values_file", ["values-kind.yaml", "values-minikube.yaml"])
def test_local_cluster_values_render_and_validate(values_file: str) -> None:
    objects = render_chart(_load(K8S / values_file))
    for obj in objects:
        kubernetes_validate.validate(obj, "1.35", strict=True)
    ingress = one(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert one(objects, "ConfigMap", "-config")["data"]["ENABLE_TEST_ENDPOINTS"] == "true"


def test_production_values_use_the_external_database_and_a_migration_hook() -> None:
    objects = render_chart(_load(K8S / "values-production.yaml"))
    for obj in objects:
        if "monitoring.coreos.com" not in obj["apiVersion"]:
            kubernetes_validate.validate(obj, "1.35", strict=True)
    assert not [
        o
        for o in objects
        if o["kind"] in {"StatefulSet", "Secret"} and "-postgresql" in o["metadata"]["name"]
    ]
    job = one(objects, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    sources = job["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert sources == [
        {
            "secret": {
                "name": "trustcard-db",
                "items": [{"key": "database-url", "path": "DATABASE_URL"}],
            }
        }
    ]


@pytest.mark.parametrize("values_file", ["values-kind.yaml", "values-minikube.yaml"])
def test_local_cluster_values_bundle_postgres(values_file: str) -> None:
    postgres = one(render_chart(_load(K8S / values_file)), "StatefulSet", "-postgresql")
    claim = postgres["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_keda_values_layer_on_top_of_kind() -> None:
    values = _load(K8S / "values-kind.yaml")
    values["worker"].update(_load(K8S / "values-keda.yaml")["worker"])
    assert one(render_chart(values), "ScaledObject")["spec"]["maxReplicaCount"] == 5


def test_prometheus_adapter_rule_serves_the_hpa_metric() -> None:
    adapter = _load(K8S / "prometheus-adapter-values.yaml")
    rule = adapter["rules"]["external"][0]
    hpa = one(render_chart(), "HorizontalPodAutoscaler", "-worker")
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    assert rule["name"]["as"] == metric["name"]
    assert metric["name"] in rule["seriesQuery"]
    for label in metric["selector"]["matchLabels"]:
        assert label in rule["metricsQuery"]


def test_kind_cluster_maps_the_ingress_ports() -> None:
    cluster = _load(K8S / "kind-cluster.yaml")
    assert cluster["kind"] == "Cluster"
    ports = {m["hostPort"] for m in cluster["nodes"][0]["extraPortMappings"]}
    assert ports == {80, 443}


def test_otel_collector_pipeline_is_wired() -> None:
    config = _load(K8S / "otel-collector.yaml")
    pipeline = config["service"]["pipelines"]["traces"]
    for section in ("receivers", "processors", "exporters"):
        for name in pipeline[section]:
            assert name in config[section], f"{section}: {name} is not defined"


def test_skaffold_refers_to_what_exists() -> None:
    skaffold = _load(ROOT / "skaffold.yaml")
    assert skaffold["apiVersion"].startswith("skaffold/v4")
    artifact = skaffold["build"]["artifacts"][0]
    assert (ROOT / artifact["docker"]["dockerfile"]).exists()
    release = skaffold["deploy"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    for values_file in release["valuesFiles"]:
        assert (ROOT / values_file).exists()
    for profile in skaffold["profiles"]:
        for patch in profile.get("patches", []):
            assert (ROOT / patch["value"]).exists()
    forward = skaffold["portForward"][0]
    service_name = f"{release['name']}-api"  # release name == chart name: no prefix doubling
    objects = render_chart(_load(ROOT / release["valuesFiles"][0]), release=release["name"])
    services = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Service"}
    assert forward["resourceName"] == service_name
    assert services[service_name]["spec"]["ports"][0]["port"] == forward["port"]
    assert artifact["image"] in release["setValueTemplates"]["image.repository"]


def test_kind_e2e_script_passes_shellcheck_and_names_files_that_exist() -> None:
    """scripts/kind-e2e cannot run here (no cluster, no internet): lint it and check its inputs."""
    script = ROOT / "scripts" / "kind-e2e"
    shellcheck = find_tool("shellcheck")
    assert shellcheck, "shellcheck is not installed: run scripts/install-tools"
    subprocess.run([shellcheck, "--severity=style", str(script)], check=True)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for path in ["k8s/kind-cluster.yaml", "k8s/values-kind.yaml", "k8s/values-keda.yaml"]:
        assert f"$ROOT/{path}" in text
        assert (ROOT / path).is_file()
    assert "$ROOT/charts/trustcard" in text


def test_the_packaged_chart_renders_like_the_directory(tmp_path: Path) -> None:
    """`helm package` (what a release pushes to an OCI registry) keeps every template and file."""
    helm = find_tool("helm")
    assert helm, "helm is not installed: run scripts/install-tools"
    subprocess.run([helm, "package", str(CHART), "-d", str(tmp_path)], check=True, timeout=60)
    (package,) = tmp_path.glob("trustcard-*.tgz")
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert package.name == f"trustcard-{version}.tgz"

    def kinds_and_names(chart: Path) -> list[tuple[str, str]]:
        out = subprocess.run(
            [helm, "template", "release", str(chart), "-n", "trustcard"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        objects = [obj for obj in yaml.safe_load_all(out) if obj]
        return sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects)

    assert kinds_and_names(package) == kinds_and_names(CHART)
    with tarfile.open(package) as archive:
        names = archive.getnames()
    assert "trustcard/files/dashboards/trustcard.json" in names
    assert "trustcard/values.schema.json" in names
