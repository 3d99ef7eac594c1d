"""Analysis metrics from a real prefork worker: every fetch cause, analyzer status and stage.

Analyses run in pool children; the counts must reach the main process's /metrics (the socket
pair of trustcard.observability.analysis_metrics). A local post site answers each way a real
one fails; two test plug-ins raise and overrun their time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.metrics_text import Samples, scrape, value
from tests.plugins import install_example_plugin
from tests.stack import ServiceStack, wait_until
from tests.unit.analysis.conftest import PostSite, Route
from tests.unit.analysis.test_extraction import og_page

pytestmark = pytest.mark.integration

ANALYZERS_MODULE = """
import time

from trustcard.analysis.signals import Signal


class Crashing:
    name = "crashing"
    version = "1"

    def analyze(self, content):
        raise RuntimeError("analyzer bug")


class Stalling:
    name = "stalling"
    version = "1"

    def analyze(self, content):
        time.sleep(3)
        return Signal(name=self.name, score=0.0, confidence=1.0)
"""
EXTRA_ANALYZERS = {
    "crashing": "metrics_test_analyzers:Crashing",
    "stalling": "metrics_test_analyzers:Stalling",
}
MAX_PAGE_BYTES = 4096


@pytest.fixture(scope="module")
def site() -> Iterator[PostSite]:
    with PostSite() as running, PostSite() as internal:
        # A second loopback server stands in for an internal service a redirect points at.
        internal.routes["/"] = Route(body=b"internal")
        running.routes["/internal"] = Route(302, b"", headers={"Location": internal.url("/")})
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, site: PostSite) -> Iterator[ServiceStack]:
    workdir = Path(tmp_path_factory.mktemp("analysis-metrics"))
    plugins = install_example_plugin(workdir / "site-packages", EXTRA_ANALYZERS)
    (plugins / "metrics_test_analyzers.py").write_text(ANALYZERS_MODULE)
    service = ServiceStack(
        workdir=workdir,
        env_overrides={
            "POST_FETCH_BASE_URL": site.base_url,
            "POST_FETCH_TIMEOUT_SECONDS": "1",
            "POST_FETCH_MAX_BYTES": str(MAX_PAGE_BYTES),
            "ANALYZER_TIMEOUT_SECONDS": "0.5",
            "PYTHONPATH": str(plugins),
        },
    )
    try:
        yield service.start()
    finally:
        service.stop()


def _analyse(client: httpx.Client, site: PostSite, route: Route | None, **body: Any) -> str:
    shortcode = "C" + uuid.uuid4().hex[:10]
    if route is not None:
        site.routes[f"/p/{shortcode}/"] = route
    response = client.post(
        "/analysis/posts", json={"url": f"https://www.instagram.com/p/{shortcode}/", **body}
    )
    assert response.status_code == 202, response.text
    analysis_id: str = response.json()["analysis_id"]
    return analysis_id


def _finished(client: httpx.Client, analysis_id: str) -> str:
    status: str = client.get(f"/analysis/posts/{analysis_id}").json()["status"]
    return status if status in ("completed", "failed") else ""


def test_every_outcome_is_counted_by_cause_status_label_and_stage(
    stack: ServiceStack, site: PostSite
) -> None:
    before = scrape(stack.worker_metrics_url)
    # Each bounded fetch outcome, as a real site causes it.
    fetched: dict[str, Route | None] = {
        "ok": Route(body=og_page(site, "A calm caption about the harbour at dusk")),
        "login_wall": Route(302, b"", headers={"Location": "/accounts/login/?next=/p/x/"}),
        "rate_limited": Route(429, b"slow down", "text/plain"),
        "forbidden": Route(403, b"no", "text/plain"),
        "not_found": None,  # the site has no such page
        "timeout": Route(body=og_page(site, "late"), delay=2.5),
        "too_large": Route(body=b"<html>" + b"x" * 2 * MAX_PAGE_BYTES + b"</html>"),
        "refused_address": Route(302, b"", headers={"Location": "/internal"}),
        "not_html": Route(body=b"{}", content_type="application/json"),
        "no_metadata": Route(body=b"<html><head><title>Login</title></head></html>"),
    }
    supplied = {"content": {"caption": "Supplied caption, plain and quiet"}}
    with stack.client() as client:
        ids = {outcome: _analyse(client, site, route) for outcome, route in fetched.items()}
        ids["supplied"] = _analyse(client, site, None, **supplied)
        finished = {
            outcome: wait_until(partial(_finished, client, analysis_id), 60, 0.2, outcome)
            for outcome, analysis_id in ids.items()
        }
    assert finished == {
        **{outcome: "failed" for outcome in fetched},
        "ok": "completed",
        "supplied": "completed",
    }

    def counted() -> Samples | None:
        samples = scrape(stack.worker_metrics_url)
        done = _delta(samples, before, "trustcard_analysis_stage_duration_seconds_count", "extract")
        return samples if done == len(ids) else None

    after: Samples = wait_until(counted, 10, 0.2, "every analysis counted")

    def extractions(source: str, outcome: str) -> float:
        name = "trustcard_analysis_extractions_total"
        return value(after, name, source=source, outcome=outcome) - value(
            before, name, source=source, outcome=outcome
        )

    assert {outcome: extractions("fetched", outcome) for outcome in fetched} == dict.fromkeys(
        fetched, 1.0
    )
    assert extractions("supplied", "ok") == 1
    assert extractions("fetched", "connect_failed") == 0

    def results(analyzer: str, status: str) -> float:
        name = "trustcard_analysis_analyzer_results_total"
        return value(after, name, analyzer=analyzer, status=status) - value(
            before, name, analyzer=analyzer, status=status
        )

    # Two completed analyses; each ran every analyzer once.
    assert results("crashing", "error") == 2
    assert results("stalling", "timeout") == 2
    # No claims stored, no deepfake model: what these say varies; each answered twice.
    statuses = ("ok", "unavailable", "timeout", "error")
    for analyzer in ("ai_generated", "deepfake", "fact_check", "shouting"):
        assert sum(results(analyzer, status) for status in statuses) == 2, analyzer
    labels = ("trustworthy", "questionable", "untrustworthy", "unknown")
    assert sum(_delta(after, before, "trustcard_analysis_trust_labels_total", label=label)
               for label in labels) == 2  # fmt: skip
    for stage in ("ai_generated", "crashing", "stalling", "trust_score", "store"):
        count = "trustcard_analysis_stage_duration_seconds_count"
        assert _delta(after, before, count, stage) == 2, stage
    # The stalling analyzer's stage lasted its timeout (0.5 s), not the 3 s it sleeps.
    stalled = _delta(after, before, "trustcard_analysis_stage_duration_seconds_sum", "stalling")
    assert 2 * 0.5 <= stalled < 2 * 2.0


def _delta(
    after: Samples, before: Samples, name: str, stage: str | None = None, **labels: str
) -> float:
    if stage is not None:
        labels["stage"] = stage
    return value(after, name, **labels) - value(before, name, **labels)
