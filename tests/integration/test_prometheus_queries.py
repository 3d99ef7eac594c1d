"""A real Prometheus scrapes the live API, worker and exporter; every shipped query must work.

The expressions are the dashboard's panels and variables, the chart's recording and alerting
rules (loaded into this Prometheus, so recording rules are evaluated too) and the
prometheus-adapter query behind the worker HPA. A missing or misspelt metric returns nothing,
which fails the test.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.chart.helm import find_tool
from tests.chart.metric_names import (
    EXTERNAL,
    adapter_expressions,
    dashboard_expressions,
    metric_names,
    rendered_rule_groups,
    rule_expressions,
    series_names,
)
from tests.prometheus_server import PrometheusServer
from tests.stack import Proc, ServiceStack, poll_until, submit, trustcard_cmd, wait_until
from trustcard.local.redis_server import free_port

pytestmark = pytest.mark.integration

NAMESPACE = "trustcard"  # the static `namespace` label our scrape gives, like a cluster's


def _prometheus_binary() -> str:
    binary = find_tool("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed: scripts/install-tools must provide it")
        pytest.skip("prometheus is not installed (run scripts/install-tools)")
    return binary


@pytest.fixture(scope="module")
def exporter(stack: ServiceStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = Proc(
        "exporter",
        trustcard_cmd("exporter", "--port", str(port)),
        stack.env(),
        Path(tmp_path_factory.mktemp("exporter")) / "exporter.log",
    ).start()

    def answers() -> bool:
        assert proc.alive(), proc.log()[-2000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 30, what="the exporter")
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def prometheus(
    stack: ServiceStack, exporter: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        binary=_prometheus_binary(),
        workdir=Path(tmp_path_factory.mktemp("prometheus")),
        targets={
            "trustcard-api": [f"127.0.0.1:{stack.api_port}"],
            "trustcard-worker": [f"127.0.0.1:{stack.worker_metrics_port}"],
            "trustcard-exporter": [exporter],
        },
        rule_groups=rendered_rule_groups(namespace=NAMESPACE),
    )
    try:
        server.start()
        server.wait_for_scrapes(seconds=1)
        _drive_traffic(stack)
        yield server
    finally:
        server.stop()


def _drive_traffic(stack: ServiceStack) -> None:
    """Two waves of every outcome, a few scrapes apart, so rates and quantiles have data."""
    with stack.client() as client:
        for _ in range(2):
            ids = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(5)]
            failing = submit(client, "/tasks/test/fail")
            long_id = submit(client, "/tasks/test/long", stage_seconds=0.02)
            for task_id in ids:
                poll_until(client, task_id, {"completed"})
            poll_until(client, failing, {"failed"})
            poll_until(client, long_id, {"completed"})
            client.get("/no/such/route")
            _analyse_posts(client)
            time.sleep(3)


def _analyse_posts(client: httpx.Client) -> None:
    """One supplied post (completed) and one fetched (fails: nothing listens at the site)."""
    ids = []
    for body in ({"content": {"caption": "A quiet supplied caption"}}, {}):
        url = f"https://www.instagram.com/p/C{uuid.uuid4().hex[:10]}/"
        response = client.post("/analysis/posts", json={"url": url, **body})
        assert response.status_code == 202, response.text
        ids.append(response.json()["analysis_id"])

    def finished(analysis_id: str) -> bool:
        status = client.get(f"/analysis/posts/{analysis_id}").json()["status"]
        return status in ("completed", "failed")

    for analysis_id in ids:
        wait_until(partial(finished, analysis_id), 30, what=f"analysis {analysis_id}")


def _returns_data(server: PrometheusServer, expr: str, timeout: float = 30) -> list[object]:
    result: list[object] = wait_until(
        lambda: server.query(expr), timeout, interval=0.5, what=f"data for {expr!r}"
    )
    return result


def test_every_contract_metric_is_scraped_and_nothing_else(prometheus: PrometheusServer) -> None:
    scraped = {
        r["metric"]["__name__"]
        for r in prometheus.query('count by (__name__) ({__name__=~"trustcard_.+"})')
    }
    expected = {name for name in series_names() if name.startswith("trustcard_")}
    assert expected - scraped == set(), "contract metrics nobody exports"
    assert scraped - expected == set(), "exported metrics missing from the contract"


def test_dashboard_queries_return_data(prometheus: PrometheusServer) -> None:
    empty = []
    for source, expr in dashboard_expressions(rate_interval="1m"):
        if metric_names(expr) <= set(EXTERNAL):
            continue  # kube-state-metrics panels: no such exporter here (checked below)
        try:
            _returns_data(prometheus, expr, timeout=20)
        except AssertionError as exc:
            empty.append(f"{source}: {exc}")
    assert not empty, "\n".join(empty)


def test_only_kube_state_metrics_panels_were_left_out() -> None:
    external = [
        source for source, expr in dashboard_expressions() if metric_names(expr) & set(EXTERNAL)
    ]
    assert len(external) <= 2, external


def test_recording_rules_evaluate_to_data(prometheus: PrometheusServer) -> None:
    empty = []
    for source, expr in rule_expressions(rendered_rule_groups(namespace=NAMESPACE)):
        if not source.startswith("recording rule"):
            continue
        record = source.removeprefix("recording rule ")
        try:
            _returns_data(prometheus, expr, timeout=20)
            # And Prometheus itself recorded it from the loaded rule file.
            _returns_data(prometheus, record, timeout=20)
        except AssertionError as exc:
            empty.append(f"{source}: {exc}")
    assert not empty, "\n".join(empty)
    unhealthy = [r["name"] for r in prometheus.rule_health() if r.get("health") != "ok"]
    assert not unhealthy, unhealthy


def test_alert_expressions_parse_and_read_existing_series(prometheus: PrometheusServer) -> None:
    problems = []
    for source, expr in rule_expressions(rendered_rule_groups(namespace=NAMESPACE)):
        if not source.startswith("alert"):
            continue
        prometheus.query(expr)  # raises on a parse or evaluation error
        # An alert on a missing series never fires: each series it reads must have data here.
        for name in metric_names(expr):
            selector = re.sub(r"\s+", "", name)
            if not prometheus.query(f'{selector}{{namespace="{NAMESPACE}"}}'):
                problems.append(f"{source}: {name} has no data")
    assert not problems, "\n".join(problems)


def test_quiet_alerts_stay_quiet_on_a_healthy_stack(prometheus: PrometheusServer) -> None:
    firing = [
        r["labels"]["alertname"]
        for r in httpx.get(f"{prometheus.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    ]
    # test.fail fails on purpose, and so does every fetched post page (nothing listens at the
    # stack's POST_FETCH_BASE_URL): their ratio alerts may be pending; nothing else.
    expected = {"TrustcardTaskFailureRatioHigh", "TrustcardAnalysisExtractionFailureRatioHigh"}
    assert set(firing) <= expected, firing


def test_hpa_adapter_query_gives_one_depth_for_queue_analysis(
    prometheus: PrometheusServer,
) -> None:
    for source, expr in adapter_expressions(NAMESPACE):
        result = _returns_data(prometheus, expr, timeout=20)
        if "metricsQuery" in source:
            assert len(result) == 1, result
            sample = result[0]
            assert isinstance(sample, dict)
            assert sample["metric"]["queue"] == "analysis"
            assert float(sample["value"][1]) >= 0
