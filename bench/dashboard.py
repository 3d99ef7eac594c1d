"""The shipped Grafana dashboard as pictures: each panel's own PromQL against a live Prometheus.

Grafana cannot run here, so `python -m bench.dashboard` starts what a cluster would: Redis, a
worker, the API, the queue exporter and a Prometheus scraping them every second, runs a small
workload (tasks, a failing task, analyses of a local post site that answers ok, a login wall,
429 and 404), then runs every panel's queries as range queries and draws one PNG per dashboard
row into docs/images/. It exits 1, naming the panels, when a query returns nothing: a panel
that would be empty in Grafana fails the run (`--check` draws into a scratch folder instead).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.chart.helm import find_tool
from tests.chart.metric_names import (
    DASHBOARD,
    EXTERNAL,
    metric_names,
    substitute_grafana_variables,
)
from tests.prometheus_server import PrometheusServer
from tests.stack import Proc, ServiceStack, poll_until, submit, trustcard_cmd, wait_until
from tests.unit.analysis.conftest import PostSite, Route
from tests.unit.analysis.test_extraction import og_page

from bench.dashboard_plot import render_rows
from trustcard.local.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
# The scrape interval is 1 s: a 10 s rate window moves within a short workload.
RATE_INTERVAL = "10s"
STEP_SECONDS = 1


@dataclass
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix time, value)


@dataclass
class TargetResult:
    ref_id: str
    expr: str
    legend: str
    series: list[Series]
    external: bool  # reads only another exporter's metrics (kube-state-metrics): not here


def panels_without_data(
    results: dict[int, list[TargetResult]], titles: dict[int, str]
) -> list[str]:
    """Each panel query (kube-state-metrics' left aside) that returned no series, named."""
    return [
        f"panel {panel_id} {titles[panel_id]!r} {target.ref_id}: no data for {target.expr!r}"
        for panel_id, targets in results.items()
        for target in targets
        if not target.series and not target.external
    ]


def query_panels(
    prometheus: PrometheusServer, dashboard: dict[str, Any], start: float, end: float
) -> dict[int, list[TargetResult]]:
    results: dict[int, list[TargetResult]] = {}
    for panel in _panels(dashboard):
        results[panel["id"]] = [
            TargetResult(
                target["refId"],
                target["expr"],
                target.get("legendFormat", ""),
                _query_range(prometheus, target["expr"], start, end),
                external=metric_names(target["expr"]) <= set(EXTERNAL),
            )
            for target in panel.get("targets", [])
        ]
    return results


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel
        yield from panel.get("panels", [])


def _query_range(prometheus: PrometheusServer, expr: str, start: float, end: float) -> list[Series]:
    response = httpx.get(
        f"{prometheus.url}/api/v1/query_range",
        params={
            "query": substitute_grafana_variables(expr, RATE_INTERVAL),
            "start": start,
            "end": end,
            "step": STEP_SECONDS,
        },
        timeout=30,
    )
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr!r}: {body.get('error')}")
    return [
        Series(
            {k: v for k, v in item["metric"].items()},
            [(float(at), float(value)) for at, value in item["values"]],
        )
        for item in body["data"]["result"]
    ]


@contextmanager
def live_stack(workdir: Path) -> Iterator[tuple[ServiceStack, PrometheusServer, PostSite]]:
    """Redis, worker, API, exporter and a Prometheus scraping the three, all on loopback."""
    binary = find_tool("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not installed: run scripts/install-tools")
    with ExitStack() as stack:
        site = stack.enter_context(PostSite())
        service = ServiceStack(
            workdir / "stack",
            env_overrides={"POST_FETCH_BASE_URL": site.base_url, "POST_FETCH_TIMEOUT_SECONDS": "2"},
        )
        stack.callback(service.stop)
        service.start()
        exporter_port = free_port()
        exporter = Proc(
            "exporter",
            trustcard_cmd("exporter", "--port", str(exporter_port)),
            service.env(),
            workdir / "exporter.log",
        ).start()
        stack.callback(exporter.stop)
        wait_until(lambda: _answers(exporter_port), 30, what="the exporter")
        prometheus = PrometheusServer(
            binary=binary,
            workdir=workdir / "prometheus",
            targets={
                "trustcard-api": [f"127.0.0.1:{service.api_port}"],
                "trustcard-worker": [f"127.0.0.1:{service.worker_metrics_port}"],
                "trustcard-exporter": [f"127.0.0.1:{exporter_port}"],
            },
        )
        stack.callback(prometheus.stop)
        prometheus.start()
        prometheus.wait_for_scrapes(seconds=1)
        yield service, prometheus, site


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def run_workload(service: ServiceStack, site: PostSite, waves: int = 3) -> None:
    """A few waves, seconds apart: a backlog of short tasks, failures, long tasks, analyses."""
    pages = {
        "ok": Route(body=og_page(site, "A calm caption about the harbour at dusk")),
        "login": Route(302, b"", headers={"Location": "/accounts/login/"}),
        "limited": Route(429, b"slow down", "text/plain"),
        "missing": None,
    }
    with service.client() as client:
        for _ in range(waves):
            # More sleeps than pool processes: the queue fills, then drains.
            sleeps = [submit(client, "/tasks/test/sleep", seconds=0.3) for _ in range(12)]
            adds = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(10)]
            failing = submit(client, "/tasks/test/fail")
            long_id = submit(client, "/tasks/test/long", stage_seconds=0.05)
            analyses = [_analyse(client, site, route) for route in pages.values()]
            analyses.append(_analyse(client, site, None, caption="A quiet supplied caption"))
            client.get("/no/such/route")
            for task_id in [*sleeps, *adds, long_id]:
                poll_until(client, task_id, {"completed"}, timeout=60)
            poll_until(client, failing, {"failed"})
            for task_id in analyses:
                poll_until(client, task_id, {"completed", "failed"}, timeout=60)
            time.sleep(4)


def _analyse(
    client: httpx.Client, site: PostSite, route: Route | None, caption: str | None = None
) -> str:
    shortcode = "C" + uuid.uuid4().hex[:10]
    body: dict[str, Any] = {"url": f"https://www.instagram.com/p/{shortcode}/"}
    if caption is not None:
        body["content"] = {"caption": caption}
    elif route is not None:
        site.routes[f"/p/{shortcode}/"] = route
    response = client.post("/analysis/posts", json=body)
    response.raise_for_status()
    task_id: str = response.json()["task_id"]
    return task_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--check", action="store_true", help="draw into a scratch folder only")
    parser.add_argument("--out", type=Path, help=f"where the PNGs go (default {IMAGES})")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="dashboard JSON")
    args = parser.parse_args(argv)
    dashboard = json.loads(args.dashboard.read_text())
    with tempfile.TemporaryDirectory(prefix="dashboard-") as scratch:
        out = args.out or (Path(scratch) / "images" if args.check else IMAGES)
        with live_stack(Path(scratch)) as (service, prometheus, site):
            start = time.time()
            run_workload(service, site)
            end = time.time()
            results = query_panels(prometheus, dashboard, start, end)
        written = render_rows(dashboard, results, out)
        titles = {panel["id"]: panel["title"] for panel in _panels(dashboard)}
        empty = panels_without_data(results, titles)
    for path in written:
        print(f"wrote {path}")
    if empty:
        print("panels without data:\n  " + "\n  ".join(empty), file=sys.stderr)
        return 1
    print(f"every panel returned data ({len(results)} panels, {end - start:.0f} s of workload)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
