"""The metric contract, and every PromQL expression the project ships (dashboard, rules, adapter).

`all_promql_expressions()` returns what a Prometheus must be able to evaluate: the dashboard's
queries with Grafana's variables substituted, the rendered PrometheusRule's recording and alerting
expressions, and the prometheus-adapter query with its template filled in as the adapter would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tests.chart.helm import CHART, ROOT, one, render_chart


@dataclass(frozen=True)
class Metric:
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    source: str  # api, exporter or worker: the pod that exports it


def _metrics(source: str, kind: str, *specs: tuple[str, tuple[str, ...]]) -> dict[str, Metric]:
    return {name: Metric(kind, labels, source) for name, labels in specs}


TASK = ("task_name",)
# The contract between the service and the chart: names, types and labels (fixed).
CONTRACT: dict[str, Metric] = {
    **_metrics(
        "api",
        "counter",
        ("trustcard_http_requests_total", ("route", "method", "status")),
        ("trustcard_tasks_submitted_total", TASK),
        ("trustcard_submission_errors_total", ("cause",)),
        # The worker's main process exports it too (redis_clients/sentinel_watch.py).
        ("trustcard_redis_master_switches_total", ()),
    ),
    **_metrics(
        "api",
        "histogram",
        ("trustcard_http_request_duration_seconds", ("route", "method")),
        ("trustcard_broker_publish_duration_seconds", ()),
    ),
    **_metrics(
        "api",
        "gauge",
        # The worker exports it too (read at its start); the API re-reads it on every probe.
        ("trustcard_redis_eviction_policy_safe", ("dependency", "policy")),
    ),
    **_metrics(
        "exporter",
        "gauge",
        ("trustcard_queue_depth", ("queue",)),
        ("trustcard_tasks_unacked", ()),
        ("trustcard_queue_exporter_redis_up", ()),
    ),
    **_metrics(
        "worker",
        "counter",
        ("trustcard_task_received_total", TASK),
        ("trustcard_task_started_total", TASK),
        ("trustcard_task_succeeded_total", TASK),
        ("trustcard_task_failed_total", ("task_name", "exception")),
        ("trustcard_task_retried_total", TASK),
        ("trustcard_task_revoked_total", TASK),
        # Not in the first contract list; the worker exports it (its pool process died mid-task).
        ("trustcard_task_lost_total", TASK),
    ),
    **_metrics(
        "worker",
        "histogram",
        ("trustcard_task_runtime_seconds", TASK),
        ("trustcard_task_queue_wait_seconds", TASK),
    ),
    **_metrics(
        "worker",
        "gauge",
        ("trustcard_tasks_in_progress", TASK),
        ("trustcard_worker_up", ()),
        (
            "trustcard_worker_info",
            (
                "version",
                "celery_version",
                "concurrency",
                "prefetch_multiplier",
                "max_tasks_per_child",
            ),
        ),
        ("trustcard_worker_processes", ()),
    ),
    # The analysis pipeline's, counted in the worker's main process (analysis_metrics.py).
    **_metrics(
        "worker",
        "counter",
        ("trustcard_analysis_extractions_total", ("source", "outcome")),
        ("trustcard_analysis_analyzer_results_total", ("analyzer", "status")),
        ("trustcard_analysis_trust_labels_total", ("label",)),
    ),
    **_metrics(
        "worker",
        "histogram",
        ("trustcard_analysis_stage_duration_seconds", ("stage",)),
    ),
}
# Metrics of other exporters the dashboard may show (optional panels), with their labels.
EXTERNAL: dict[str, tuple[str, ...]] = {
    "kube_deployment_status_replicas": ("deployment",),
}
# Labels Prometheus adds to every scraped series (Prometheus Operator's target labels).
TARGET_LABELS = frozenset(
    {"namespace", "pod", "job", "instance", "container", "endpoint", "service"}
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

DASHBOARD = CHART / "files" / "dashboards" / "trustcard.json"
ADAPTER_VALUES = ROOT / "k8s" / "prometheus-adapter-values.yaml"
# Grafana's interval variables and what they become outside Grafana.
GRAFANA_INTERVALS = ("__rate_interval", "__interval", "__range")


def series_names() -> dict[str, frozenset[str]]:
    """Every series name the contract exports -> the labels it may carry (with target labels)."""
    names: dict[str, frozenset[str]] = {}
    for name, metric in CONTRACT.items():
        labels = TARGET_LABELS | set(metric.labels)
        if metric.kind == "histogram":
            names[name + "_bucket"] = labels | {"le"}
            names[name + "_sum"] = labels
            names[name + "_count"] = labels
        else:
            names[name] = labels
    for name, external in EXTERNAL.items():
        names[name] = TARGET_LABELS | set(external)
    return names


def substitute_grafana_variables(expr: str, rate_interval: str = "1m") -> str:
    """A dashboard query as Prometheus sees it with every variable on "All" (`.*`)."""
    for builtin in GRAFANA_INTERVALS:
        expr = expr.replace("${" + builtin + "}", rate_interval).replace(
            "$" + builtin, rate_interval
        )
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def dashboard_panels(dashboard: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included (rows themselves too)."""
    panels: list[dict[str, Any]] = []
    for panel in (dashboard or load_dashboard())["panels"]:
        panels.append(panel)
        panels += panel.get("panels", [])
    return panels


def dashboard_expressions(rate_interval: str | None = None) -> list[tuple[str, str]]:
    """(source, expr) of every dashboard query and variable; raw unless rate_interval is given.

    A `label_values(selector, label)` variable becomes `count by (label) (selector)`.
    """
    dashboard = load_dashboard()
    found: list[tuple[str, str]] = []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            source = f"dashboard panel {panel['id']} {panel['title']!r} {target['refId']}"
            found.append((source, target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, f"variable {variable['name']}: not a label_values() query"
        expr = f"count by ({match.group(2)}) ({match.group(1)})"
        found.append((f"dashboard variable {variable['name']}", expr))
    if rate_interval is not None:
        found = [(source, substitute_grafana_variables(e, rate_interval)) for source, e in found]
    return found


MONITORING_VALUES: dict[str, Any] = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
}


def rendered_rule_groups(
    values: dict[str, Any] | None = None, namespace: str = "trustcard"
) -> list[dict[str, Any]]:
    """spec.groups of the PrometheusRule rendered with the monitoring switches on."""
    objects = render_chart(values or MONITORING_VALUES, namespace=namespace)
    groups: list[dict[str, Any]] = one(objects, "PrometheusRule")["spec"]["groups"]
    return groups


def rule_expressions(
    groups: list[dict[str, Any]] | None = None, namespace: str = "trustcard"
) -> list[tuple[str, str]]:
    found = []
    for group in groups if groups is not None else rendered_rule_groups(namespace=namespace):
        for rule in group["rules"]:
            kind, name = (
                ("recording rule", rule["record"]) if "record" in rule else ("alert", rule["alert"])
            )
            found.append((f"{kind} {name}", str(rule["expr"])))
    return found


def adapter_expressions(namespace: str = "trustcard") -> list[tuple[str, str]]:
    """The adapter's seriesQuery, and its metricsQuery as it asks Prometheus for the worker HPA."""
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())
    hpa = one(render_chart(namespace=namespace), "HorizontalPodAutoscaler", "-worker")
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    matchers = {**metric["selector"]["matchLabels"], "namespace": namespace}
    found = []
    for rule in adapter["rules"]["external"]:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        label_matchers = ",".join(f'{key}="{value}"' for key, value in sorted(matchers.items()))
        query = rule["metricsQuery"].replace("<<.Series>>", series.group())
        query = query.replace("<<.LabelMatchers>>", label_matchers)
        assert "<<" not in query, f"unsubstituted template in {query}"
        found.append((f"prometheus-adapter seriesQuery {rule['name']['as']}", rule["seriesQuery"]))
        found.append((f"prometheus-adapter metricsQuery {rule['name']['as']}", query))
    return found


def all_promql_expressions(
    rate_interval: str = "1m", namespace: str = "trustcard"
) -> list[tuple[str, str]]:
    """(source, PromQL) for the dashboard, the PrometheusRule and the prometheus-adapter rule.

    Dashboard variables are substituted (`$namespace`, `$task` -> `.*`, `$__rate_interval` ->
    rate_interval); rules are rendered for a release in `namespace` (their series selectors carry
    `namespace="<namespace>"`), and the adapter's <<.Series>>/<<.LabelMatchers>> are filled in
    with the worker HPA's selector plus that namespace.
    """
    return (
        dashboard_expressions(rate_interval)
        + rule_expressions(namespace=namespace)
        + adapter_expressions(namespace)
    )


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)


def _blank_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (functions, keywords, labels and strings left out)."""
    text = _blank_strings(expr)
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        if name.lower() in KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(name)
    # A bare selector such as {__name__="x"} would hide a name: the project writes none.
    assert "__name__" not in expr, expr
    return names


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(series name, label names matched) of every `name{...}` selector."""
    text = expr
    found = []
    for match in _SELECTOR.finditer(text):
        name = match.group(1) or ""
        found.append((name, set(_MATCHER.findall(_blank_strings(match.group(2))))))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_left/group_right clauses."""
    labels: set[str] = set()
    for match in _GROUPING.finditer(_blank_strings(expr)):
        labels |= {label.strip() for label in match.group(1).split(",") if label.strip()}
    return labels
