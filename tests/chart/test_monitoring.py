"""Observability in the chart: worker /metrics, logs and traces settings, Prometheus Operator
objects, the rules (checked and unit-tested by promtool) and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

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
)
from tests.chart.metric_names import (
    CONTRACT,
    EXTERNAL,
    MONITORING_VALUES,
    TARGET_LABELS,
    adapter_expressions,
    all_promql_expressions,
    dashboard_expressions,
    dashboard_panels,
    grouping_labels,
    load_dashboard,
    metric_names,
    rendered_rule_groups,
    selector_labels,
    series_names,
    substitute_grafana_variables,
)

PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "rules-test.yaml"
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
MONITORING_NETPOL = {"networkPolicy": {"enabled": True}}
PROMETHEUS_PEERS = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
INGRESS_PEERS = [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]
# The alerts the chart defines, by their values key.
ALERTS = {
    "taskFailureRatio": "TrustcardTaskFailureRatioHigh",
    "queueDepth": "TrustcardQueueDepthHigh",
    "queueWait": "TrustcardQueueWaitHigh",
    "queueNotConsumed": "TrustcardQueueNotConsumed",
    "redisUnreachable": "TrustcardRedisUnreachable",
    "queueMetricsAbsent": "TrustcardQueueMetricsAbsent",
    "apiErrorRatio": "TrustcardApiErrorRatioHigh",
    "analysisExtractionFailureRatio": "TrustcardAnalysisExtractionFailureRatioHigh",
    "redisEvictionPolicy": "TrustcardRedisEvictionPolicyUnsafe",
    "redisMasterFlapping": "TrustcardRedisMasterFlapping",
}
# What tests/chart/promtool/rules-test.yaml was written for (its header says the same).
PROMTOOL_TEST_DEFAULTS: dict[str, dict[str, float | str]] = {
    "taskFailureRatio": {"threshold": 0.05, "for": "5m"},
    "queueDepth": {"threshold": 100, "for": "20m"},
    "queueWait": {"thresholdSeconds": 60, "for": "15m"},
    "queueNotConsumed": {"for": "10m"},
    "redisUnreachable": {"for": "5m"},
    "queueMetricsAbsent": {"for": "10m"},
    "apiErrorRatio": {"threshold": 0.05, "for": "10m"},
    "analysisExtractionFailureRatio": {"threshold": 0.5, "for": "15m"},
    "redisEvictionPolicy": {"for": "5m"},
    "redisMasterFlapping": {"threshold": 2, "for": "0m"},
}


def _promtool() -> str:
    promtool = find_tool("promtool")
    assert promtool, "promtool is not installed: run scripts/install-tools"
    return promtool


def _run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _write_rules(groups: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def _rules(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """record or alert name -> rule."""
    return {
        rule.get("record", rule.get("alert")): rule for group in groups for rule in group["rules"]
    }


class TestWorkerMetrics:
    def test_worker_serves_metrics_on_a_named_port_on_all_interfaces(self) -> None:
        worker = container(one(render_chart(), "Deployment", "-worker"), "worker")
        assert worker["ports"] == [{"name": "metrics", "containerPort": 9808, "protocol": "TCP"}]
        env = env_map(worker)
        assert env["WORKER_METRICS_PORT"] == "9808"
        assert env["WORKER_METRICS_HOST"] == "0.0.0.0"

    def test_port_value_reaches_the_port_and_the_environment(self) -> None:
        worker = container(
            one(render_chart({"worker": {"metrics": {"port": 9100}}}), "Deployment", "-worker"),
            "worker",
        )
        assert worker["ports"][0]["containerPort"] == 9100
        assert env_map(worker)["WORKER_METRICS_PORT"] == "9100"

    def test_metrics_off_sets_port_zero_and_opens_nothing(self) -> None:
        values = {"worker": {"metrics": {"enabled": False}}, **MONITORING_NETPOL}
        objects = render_chart(values)
        worker = container(one(objects, "Deployment", "-worker"), "worker")
        assert "ports" not in worker
        assert env_map(worker)["WORKER_METRICS_PORT"] == "0"
        assert "ingress" not in one(objects, "NetworkPolicy", "-worker")["spec"]

    def test_worker_network_policy_admits_scrapes_on_the_metrics_port_only(self) -> None:
        policy = one(render_chart(MONITORING_NETPOL), "NetworkPolicy", "-worker")
        assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]

    def test_metrics_ingress_from_restricts_who_scrapes(self) -> None:
        objects = render_chart(
            {
                "networkPolicy": {
                    "enabled": True,
                    "apiIngressFrom": INGRESS_PEERS,
                    "metricsIngressFrom": PROMETHEUS_PEERS,
                }
            }
        )
        for name in ("-worker", "-exporter"):
            (rule,) = one(objects, "NetworkPolicy", name)["spec"]["ingress"]
            assert rule == {
                "ports": [{"port": "metrics", "protocol": "TCP"}],
                "from": PROMETHEUS_PEERS,
            }
        api_rules = one(objects, "NetworkPolicy", "-api")["spec"]["ingress"]
        http = [{"port": "http", "protocol": "TCP"}]
        assert api_rules == [
            {"ports": http, "from": INGRESS_PEERS},
            {"ports": http, "from": PROMETHEUS_PEERS},
        ]

    def test_an_open_api_port_needs_no_extra_scrape_rule(self) -> None:
        values = {"networkPolicy": {"enabled": True, "metricsIngressFrom": PROMETHEUS_PEERS}}
        api_rules = one(render_chart(values), "NetworkPolicy", "-api")["spec"]["ingress"]
        assert api_rules == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


class TestLogsAndTraces:
    def test_json_logs_by_default_and_text_on_request(self) -> None:
        assert one(render_chart(), "ConfigMap", "-config")["data"]["LOG_FORMAT"] == "json"
        text = render_chart({"logging": {"format": "text"}})
        assert one(text, "ConfigMap", "-config")["data"]["LOG_FORMAT"] == "text"

    def test_no_otel_variable_without_an_endpoint(self) -> None:
        objects = render_chart()
        for name in ("api", "worker", "exporter"):
            env = env_map(container(one(objects, "Deployment", f"-{name}"), name))
            assert not [key for key in env if key.startswith("OTEL_")], name
        assert not [k for k in one(objects, "ConfigMap", "-config")["data"] if "OTEL" in k]

    def test_tracing_sets_the_standard_variables_per_component(self) -> None:
        values = {
            "tracing": {
                "otlpEndpoint": "http://otel-collector.observability:4318",
                "samplingRatio": 0.25,
                "resourceAttributes": {"deployment.environment": "prod"},
            },
            "image": {"tag": "1.2.3"},
        }
        objects = render_chart(values, namespace="apps")
        for name in ("api", "worker"):
            spec = container(one(objects, "Deployment", f"-{name}"), name)
            env = env_map(spec)
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
            assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
            assert env["OTEL_SERVICE_NAME"] == f"trustcard-{name}"
            assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
            assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
            assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            attributes = dict(
                pair.split("=", 1) for pair in env["OTEL_RESOURCE_ATTRIBUTES"].split(",")
            )
            assert attributes == {
                "k8s.pod.name": "$(POD_NAME)",
                "k8s.namespace.name": "apps",
                "k8s.deployment.name": f"release-trustcard-{name}",
                "k8s.container.name": name,
                "service.version": "1.2.3",
                "deployment.environment": "prod",
            }
            # $(POD_NAME) is expanded only from variables defined earlier in the list.
            names = [item["name"] for item in spec["env"]]
            assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
        exporter = container(one(objects, "Deployment", "-exporter"), "exporter")
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_map(exporter)

    def test_sampling_ratio_defaults_to_every_trace(self) -> None:
        values = {"tracing": {"otlpEndpoint": "http://collector:4318"}}
        api = container(one(render_chart(values), "Deployment", "-api"), "api")
        assert env_map(api)["OTEL_TRACES_SAMPLER_ARG"] == "1"

    def test_documented_endpoint_is_the_collectors_otlp_http_receiver(self) -> None:
        description = SCHEMA["properties"]["tracing"]["properties"]["otlpEndpoint"]["description"]
        example = re.search(r"e\.g\. (http://[^\s;,]+)", description)
        assert example, description
        collector = yaml.safe_load((ROOT / "k8s" / "otel-collector.yaml").read_text())
        receiver = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        assert example.group(1).rsplit(":", 1)[1] == receiver.rsplit(":", 1)[1] == "4318"
        assert "otlp" in collector["service"]["pipelines"]["traces"]["receivers"]

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"tracing": {"otlpEndpoint": "otel-collector:4317"}}, "/tracing/otlpEndpoint"),
            ({"tracing": {"samplingRatio": 1.5}}, "/tracing/samplingRatio"),
            ({"logging": {"format": "xml"}}, "/logging/format"),
        ],
    )
    def test_schema_refuses_bad_settings(self, values: dict[str, Any], message: str) -> None:
        with pytest.raises(RenderError, match=message):
            render_chart(values)


class TestPrometheusOperatorObjects:
    def test_nothing_by_default(self) -> None:
        objects = render_chart()
        for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
            assert not by_kind(objects, kind)
        assert not [
            o for o in by_kind(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]
        ]

    def test_pod_monitor_scrapes_the_workers_metrics_port(self) -> None:
        values = {"monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}}}}
        objects = render_chart(values)
        monitor = one(objects, "PodMonitor")
        worker = one(objects, "Deployment", "-worker")
        pod_labels = worker["spec"]["template"]["metadata"]["labels"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert selector["app.kubernetes.io/component"] == "worker"
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s"}
        assert container(worker, "worker")["ports"][0]["name"] == endpoint["port"]
        assert monitor["metadata"]["labels"]["release"] == "kps"

    @pytest.mark.parametrize("switch", ["podMonitor", "prometheusRule"])
    def test_monitoring_workers_without_their_metrics_is_refused(self, switch: str) -> None:
        values = {
            "monitoring": {switch: {"enabled": True}},
            "worker": {"metrics": {"enabled": False}},
        }
        with pytest.raises(RenderError, match=f"monitoring.{switch}.enabled needs worker.metrics"):
            render_chart(values)

    def test_rule_labels_alert_labels_and_runbook_links(self) -> None:
        values = {
            "monitoring": {
                "prometheusRule": {
                    "enabled": True,
                    "labels": {"release": "kps"},
                    "alertLabels": {"team": "platform", "severity": "ignored"},
                    "runbookBaseUrl": "https://runbooks.example.com/trustcard",
                }
            }
        }
        rule = one(render_chart(values), "PrometheusRule")
        assert rule["metadata"]["labels"]["release"] == "kps"
        alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
        assert sorted(a["alert"] for a in alerts) == sorted(ALERTS.values())
        for alert in alerts:
            assert alert["labels"]["team"] == "platform"
            assert alert["labels"]["severity"] in {"warning", "critical"}
            assert alert["annotations"]["runbook_url"] == (
                f"https://runbooks.example.com/trustcard#{alert['alert'].lower()}"
            )

    def test_every_alert_has_summary_description_first_step_and_severity(self) -> None:
        groups = rendered_rule_groups()
        alerts = [rule for rule in _rules(groups).values() if "alert" in rule]
        assert len(alerts) == len(ALERTS)
        for alert in alerts:
            assert alert["annotations"]["summary"].endswith(".")
            assert "First step: " in alert["annotations"]["description"]
            assert "runbook_url" not in alert["annotations"]
            assert alert["labels"]["severity"]
            assert re.fullmatch(r"\d+m", alert["for"])

    def test_alerts_compare_recording_rules_to_the_thresholds_in_values(self) -> None:
        values = {
            "monitoring": {
                "prometheusRule": {
                    "enabled": True,
                    "alerts": {
                        "queueDepth": {"threshold": 250, "for": "30m", "severity": "page"},
                        "taskFailureRatio": {"threshold": 0.2},
                        "queueWait": {"thresholdSeconds": 300},
                        "apiErrorRatio": {"threshold": 0.01},
                    },
                }
            }
        }
        rules = _rules(one(render_chart(values), "PrometheusRule")["spec"]["groups"])
        depth = rules["TrustcardQueueDepthHigh"]
        assert depth["expr"] == 'trustcard:queue_depth:max{namespace="trustcard"} > 250'
        assert (depth["for"], depth["labels"]["severity"]) == ("30m", "page")
        assert rules["TrustcardTaskFailureRatioHigh"]["expr"].startswith(
            "trustcard:task_failure_ratio:rate10m{"
        )
        assert rules["TrustcardTaskFailureRatioHigh"]["expr"].endswith("> 0.2")
        assert rules["TrustcardQueueWaitHigh"]["expr"].startswith(
            "trustcard:queue_wait_seconds:p95_rate5m{"
        )
        assert rules["TrustcardQueueWaitHigh"]["expr"].endswith("> 300")
        assert rules["TrustcardApiErrorRatioHigh"]["expr"].endswith("> 0.01")

    def test_disabled_alerts_and_a_missing_exporter_leave_their_rules_out(self) -> None:
        values: dict[str, Any] = {
            "monitoring": {
                "prometheusRule": {
                    "enabled": True,
                    "alerts": {
                        "apiErrorRatio": {"enabled": False},
                        "analysisExtractionFailureRatio": {"enabled": False},
                    },
                }
            },
            "exporter": {"enabled": False},
            "worker": {"autoscaling": {"mode": "keda"}},
        }
        rules = _rules(one(render_chart(values), "PrometheusRule")["spec"]["groups"])
        assert "trustcard:queue_depth:max" not in rules
        alerts = {name for name, rule in rules.items() if "alert" in rule}
        assert alerts == {
            "TrustcardTaskFailureRatioHigh",
            "TrustcardQueueWaitHigh",
            "TrustcardRedisEvictionPolicyUnsafe",
            "TrustcardRedisMasterFlapping",
        }

    def test_no_alert_group_when_every_alert_is_off(self) -> None:
        off = {key: {"enabled": False} for key in ALERTS}
        values = {"monitoring": {"prometheusRule": {"enabled": True, "alerts": off}}}
        groups = one(render_chart(values), "PrometheusRule")["spec"]["groups"]
        assert [group["name"] for group in groups] == ["trustcard.recording"]

    def test_rules_select_the_release_namespace_only(self) -> None:
        for source, expr in [
            (s, e)
            for s, e in all_promql_expressions(namespace="apps")
            if s.startswith(("alert", "rec"))
        ]:
            for name, labels in selector_labels(expr):
                assert "namespace" in labels, f"{source}: {name} is not scoped"
            assert 'namespace="apps"' in expr, source

    def test_dashboard_configmap_for_the_grafana_sidecar(self) -> None:
        values = {"monitoring": {"grafanaDashboard": {"enabled": True}}}
        configmap = one(render_chart(values), "ConfigMap", "-dashboard")
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["namespace"] == "trustcard"
        assert "annotations" not in configmap["metadata"]
        assert json.loads(configmap["data"]["trustcard.json"]) == load_dashboard()

    def test_dashboard_label_folder_and_namespace_are_configurable(self) -> None:
        dashboard = {
            "enabled": True,
            "labelKey": "dashboards.example.com/load",
            "labelValue": "yes",
            "folder": "Apps",
            "folderAnnotation": "grafana_dashboard_folder",
            "namespace": "monitoring",
        }
        configmap = one(
            render_chart({"monitoring": {"grafanaDashboard": dashboard}}), "ConfigMap", "-dashboard"
        )
        metadata = configmap["metadata"]
        assert metadata["labels"]["dashboards.example.com/load"] == "yes"
        assert metadata["annotations"] == {"grafana_dashboard_folder": "Apps"}
        assert metadata["namespace"] == "monitoring"


class TestRulesWithPromtool:
    def test_promtool_checks_the_rendered_rules(self, tmp_path: Path) -> None:
        rules = _write_rules(rendered_rule_groups(), tmp_path / "trustcard-rules.yaml")
        result = _run_promtool("check", "rules", str(rules))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 26 rules found" in result.stdout

    def test_promtool_unit_tests_pass(self, tmp_path: Path) -> None:
        _write_rules(rendered_rule_groups(), tmp_path / "trustcard-rules.yaml")
        tests = tmp_path / PROMTOOL_TESTS.name
        tests.write_text(PROMTOOL_TESTS.read_text())
        result = _run_promtool("test", "rules", str(tests))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_unit_tests_show_every_alert_firing_and_not_firing(self) -> None:
        cases = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
        fired: set[str] = set()
        silent: set[str] = set()
        for case in cases:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else silent).add(check["alertname"])
        assert fired == silent == set(ALERTS.values())

    def test_unit_tests_cover_the_no_worker_at_all_case(self) -> None:
        cases = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
        no_worker = [
            case
            for case in cases
            if not [
                s for s in case["input_series"] if CONTRACT[_base(s["series"])].source == "worker"
            ]
            and any(
                check["alertname"] == "TrustcardQueueNotConsumed" and check["exp_alerts"]
                for check in case.get("alert_rule_test", [])
            )
        ]
        assert no_worker

    def test_unit_tests_assume_the_default_thresholds(self) -> None:
        defaults = VALUES["monitoring"]["prometheusRule"]["alerts"]
        for key, assumed in PROMTOOL_TEST_DEFAULTS.items():
            for setting, value in assumed.items():
                assert defaults[key][setting] == value, (
                    f"{key}.{setting} changed: update tests/chart/promtool/rules-test.yaml"
                )
        assert set(PROMTOOL_TEST_DEFAULTS) == set(defaults) == set(ALERTS)

    def test_every_dashboard_and_adapter_query_parses(self, tmp_path: Path) -> None:
        expressions = dashboard_expressions("1m") + adapter_expressions()
        rules = [
            {"record": f"check:query_{number}:parse", "expr": expr}
            for number, (_, expr) in enumerate(expressions)
        ]
        path = _write_rules([{"name": "parse-only", "rules": rules}], tmp_path / "queries.yaml")
        result = _run_promtool("check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


def _base(series: str) -> str:
    """Contract name of a series selector (histogram suffixes stripped)."""
    name = series.split("{", 1)[0].strip()
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in CONTRACT:
            return name.removesuffix(suffix)
    return name


class TestDashboard:
    def test_is_a_grafana_dashboard_with_unique_ids_and_a_layout(self) -> None:
        dashboard = load_dashboard()
        assert dashboard["schemaVersion"] == 39
        assert dashboard["uid"] == "trustcard"
        assert dashboard["title"]
        panels = dashboard_panels(dashboard)
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids))
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            grid = panel["gridPos"]
            assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            cover = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & cover, f"{panel['title']} overlaps another panel"
            cells |= cover

    def test_every_panel_queries_the_chosen_data_source(self) -> None:
        for panel in dashboard_panels():
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["expr"].strip(), panel["title"]
                assert target["datasource"]["uid"] == "${datasource}"

    def test_variables_are_used_only_as_regex_matchers(self) -> None:
        variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("namespace", "task"):
            assert variables[name]["includeAll"] is True
            assert variables[name]["allValue"] == ".*"
        for source, expr in dashboard_expressions():
            uses = re.findall(r"\$\{?(\w+)\}?", expr)
            for name in uses:
                if name.startswith("__"):
                    continue
                assert name in variables, f"{source}: unknown variable ${name}"
            regex_uses = re.findall(r'\w+=~"\$(\w+)"', expr)
            plain = [n for n in uses if not n.startswith("__")]
            assert sorted(plain) == sorted(regex_uses), f'{source}: use variables as =~"$var"'

    def test_ranges_use_the_rate_interval(self) -> None:
        for source, expr in dashboard_expressions():
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", f"{source}: [{window}]"

    def test_substitution_leaves_plain_promql(self) -> None:
        assert (
            substitute_grafana_variables(
                'rate(x{namespace=~"$namespace", task_name=~"${task}"}[$__rate_interval])', "2m"
            )
            == 'rate(x{namespace=~".*", task_name=~".*"}[2m])'
        )
        for source, expr in all_promql_expressions():
            assert "$" not in expr, source
            assert "<<" not in expr, source

    def test_shows_what_operators_look_at(self) -> None:
        titles = {panel["title"] for panel in dashboard_panels()}
        assert titles >= {
            "Queue depth",
            "Queue depth trend",
            "Submissions/s",
            "Completions/s by outcome",
            "Failure ratio by task",
            "Task runtime p50 / p95 / p99",
            "Queue wait p50 / p95",
            "Workers up / worker replicas",
            "Waiting, reserved, running",
            "API requests/s by route",
            "API latency p50 / p99 by route",
            "API 5xx ratio",
            "Redis master switches",
        }
        queries = " ".join(expr for _, expr in dashboard_expressions())
        # Every process counts the same switch: the most one process followed, not the sum.
        assert "max by (namespace) (increase(trustcard_redis_master_switches_total" in queries
        assert "deriv(trustcard_queue_depth" in queries
        for quantile in ("0.5", "0.95", "0.99"):
            assert (
                f"histogram_quantile({quantile}, sum by (le) (rate(trustcard_task_runtime"
                in queries
            )


class TestMetricNames:
    def test_the_parser_finds_series_names_only(self) -> None:
        expr = (
            'sum by (task_name) (rate(trustcard_task_failed_total{namespace=~"$ns"}[5m]))'
            " / on (namespace) group_left trustcard:task_starts:rate10m > 0.5e1"
            ' unless absent(trustcard_worker_up{status=~"5.."})'
        )
        assert metric_names(expr) == {
            "trustcard_task_failed_total",
            "trustcard:task_starts:rate10m",
            "trustcard_worker_up",
        }
        assert grouping_labels(expr) == {"task_name", "namespace"}

    def test_every_metric_referenced_is_in_the_contract_or_recorded(self) -> None:
        known = series_names()
        expressions = all_promql_expressions()
        recorded = {
            s.removeprefix("recording rule ") for s, _ in expressions if s.startswith("rec")
        }
        assert recorded >= {
            "trustcard:task_failure_ratio:rate10m",
            "trustcard:queue_wait_seconds:p95_rate5m",
            "trustcard:task_runtime_seconds:p99_rate5m",
            "trustcard:task_completions:rate5m",
        }
        unknown = []
        for source, expr in expressions:
            names = metric_names(expr)
            assert names, f"{source}: selects nothing"
            for name in names:
                if name not in known and name not in recorded:
                    unknown.append(f"{source}: {name}")
        assert unknown == []

    def test_every_label_matched_or_grouped_exists(self) -> None:
        known = series_names()
        all_labels = set().union(*known.values()) | {"le"}
        for source, expr in all_promql_expressions():
            for name, labels in selector_labels(expr):
                allowed = known.get(name, TARGET_LABELS | all_labels)
                assert labels <= allowed, f"{source}: {name} has no label {labels - allowed}"
            assert grouping_labels(expr) <= all_labels, source

    def test_every_source_is_covered(self) -> None:
        sources = [source for source, _ in all_promql_expressions()]
        assert len(sources) == len(set(sources))
        assert any(s.startswith("dashboard panel") for s in sources)
        assert any(s.startswith("dashboard variable") for s in sources)
        assert any(s.startswith("alert ") for s in sources)
        assert any(s.startswith("recording rule ") for s in sources)
        assert "prometheus-adapter metricsQuery trustcard_queue_depth" in sources
        adapter = dict(adapter_expressions())[
            "prometheus-adapter metricsQuery trustcard_queue_depth"
        ]
        selector = 'trustcard_queue_depth{namespace="trustcard",queue="analysis"}'
        assert adapter == f"max({selector}) by (queue, namespace)"

    def test_the_dashboard_shows_every_worker_and_exporter_metric(self) -> None:
        shown = set().union(*(metric_names(e) for _, e in dashboard_expressions()))
        shown = {_base(name) for name in shown}
        wanted = {name for name, m in CONTRACT.items() if m.source in {"worker", "exporter"}}
        wanted -= {"trustcard_task_received_total"}  # received = started + waiting in the pool
        assert wanted <= shown, wanted - shown
        assert set(EXTERNAL) <= shown

    def test_monitoring_values_render_every_monitoring_object(self) -> None:
        objects = render_chart(MONITORING_VALUES)
        assert len(by_kind(objects, "ServiceMonitor")) == 2
        assert len(by_kind(objects, "PodMonitor")) == 1
        assert len(by_kind(objects, "PrometheusRule")) == 1
        assert one(objects, "ConfigMap", "-dashboard")
