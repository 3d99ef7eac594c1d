"""The analysis API end to end: real Redis, worker, API and SQLite, a local post site, a plug-in."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from sqlalchemy import text

from tests.faults import Worker, deliveries, kill_group, start_worker, stop_quietly
from tests.plugins import install_example_plugin
from tests.postgres_server import throwaway_cluster
from tests.stack import ServiceStack, poll_until, wait_until
from tests.unit.analysis.conftest import PostSite, Route
from tests.unit.analysis.images import SD_PARAMETERS, png_with_text
from tests.unit.analysis.test_extraction import og_page
from trustcard.celery_app import create_celery_app
from trustcard.config import Settings
from trustcard.db.engine import create_db_engine

pytestmark = pytest.mark.integration

STAGES = ["extract", "ai_generated", "deepfake", "fact_check", "shouting", "trust_score"]
CLAIM = "Vaccines contain microchips"


def post_url(shortcode: str) -> str:
    return f"https://www.instagram.com/p/{shortcode}/"


def new_shortcode() -> str:
    return "C" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def site() -> Iterator[PostSite]:
    with PostSite() as running:
        yield running


@pytest.fixture(scope="module")
def analysis_stack(
    tmp_path_factory: pytest.TempPathFactory, site: PostSite
) -> Iterator[ServiceStack]:
    workdir = Path(tmp_path_factory.mktemp("analysis"))
    # The example plug-in, "installed" for the worker the way pip would lay it out.
    plugins = install_example_plugin(workdir / "site-packages")
    stack = ServiceStack(
        workdir=workdir,
        env_overrides={
            "POST_FETCH_BASE_URL": site.base_url,
            "POST_FETCH_TIMEOUT_SECONDS": "3",
            "PYTHONPATH": str(plugins),
        },
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture
def api(analysis_stack: ServiceStack) -> Iterator[httpx.Client]:
    with analysis_stack.client() as http:
        yield http


def submit(api: httpx.Client, url: str, expected: int = 202, **body: Any) -> dict[str, Any]:
    response = api.post("/analysis/posts", json={"url": url, **body})
    assert response.status_code == expected, response.text
    data: dict[str, Any] = response.json()
    return data


def wait_for_analysis(
    api: httpx.Client, analysis_id: str, statuses: set[str], timeout: float = 30
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/analysis/posts/{analysis_id}").json()
        return body if body["status"] in statuses else None

    result: dict[str, Any] = wait_until(check, timeout, 0.1, f"analysis {statuses}")
    return result


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stage(analysis: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in analysis["stages"] if s["name"] == name)
    return found


def test_supplied_content_is_analysed_and_stored(api: httpx.Client) -> None:
    claim = api.post(
        "/claims", json={"text": CLAIM, "verdict": "false", "sources": ["https://f.example/1"]}
    )
    assert claim.status_code == 201, claim.text
    shortcode = new_shortcode()
    caption = f"Wake up: {CLAIM}! #health @someone"
    submitted = submit(
        api,
        post_url(shortcode),
        content={
            "caption": caption,
            "media": [
                {
                    "data_base64": b64(png_with_text(parameters=SD_PARAMETERS)),
                    "content_type": "image/png",
                }
            ],
        },
    )
    assert submitted["status"] == "submitted"
    assert submitted["deduplicated"] is False
    assert submitted["status_url"] == f"/analysis/posts/{submitted['analysis_id']}"
    assert submitted["task_status_url"] == f"/tasks/{submitted['task_id']}"

    done = wait_for_analysis(api, submitted["analysis_id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert (done["shortcode"], done["percent"], done["stage"]) == (shortcode, 100, "store")
    assert done["task_id"] == submitted["task_id"]
    assert done["started_at"]
    assert done["finished_at"]
    assert [s["name"] for s in done["stages"]] == STAGES
    assert done["content"]["source"] == "supplied"
    assert done["content"]["caption"] == caption
    assert done["content"]["hashtags"] == ["health"]
    assert done["content"]["mentions"] == ["someone"]
    # The PNG's Stable Diffusion parameters chunk, and the claim stored through the API.
    ai = stage(done, "ai_generated")
    assert ai["status"] == "ok"
    assert ai["signal"]["score"] >= 0.9
    assert any("parameters" in line for line in ai["signal"]["evidence"]), ai
    fact = stage(done, "fact_check")
    assert fact["status"] == "ok"
    assert any(CLAIM in line for line in fact["signal"]["evidence"]), fact
    assert stage(done, "deepfake")["status"] == "unavailable"
    trust = done["trust"]
    assert trust["score"] is not None
    assert trust["score"] < 50
    assert done["trust_score"] == trust["score"]
    assert done["trust_label"] == trust["label"]
    assert "deepfake" in trust["missing_signals"]

    # The task's own result points at the stored analysis and agrees with it.
    task = poll_until(api, submitted["task_id"], {"completed"}, timeout=5)
    assert task["task_name"] == "analysis.process_post"
    assert task["result"]["analysis_id"] == submitted["analysis_id"]
    assert task["result"]["trust_score"] == trust["score"]
    assert task["result"]["trust_label"] == trust["label"]


def test_a_post_page_is_fetched_and_analysed(api: httpx.Client, site: PostSite) -> None:
    shortcode = new_shortcode()
    caption = "Golden hour at the pier #sunset"
    site.routes[f"/p/{shortcode}/"] = Route(body=og_page(site, caption, f"/media/{shortcode}.png"))
    site.routes[f"/media/{shortcode}.png"] = Route(
        body=png_with_text(Software="GIMP 2.10"), content_type="image/png"
    )
    submitted = submit(api, post_url(shortcode))
    done = wait_for_analysis(api, submitted["analysis_id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["content"]["source"] == "fetched"
    assert done["content"]["caption"] == caption
    assert done["content"]["media_count"] == 1
    assert site.hits[f"/p/{shortcode}/"] == 1
    assert stage(done, "fact_check")["status"] == "ok"
    assert done["trust"]["score"] is not None


def test_progress_is_reported_per_stage(api: httpx.Client, site: PostSite) -> None:
    shortcode = new_shortcode()
    # A slow page keeps the analysis in its extract stage long enough to be seen.
    site.routes[f"/p/{shortcode}/"] = Route(body=og_page(site, "slow page"), delay=1.5)
    submitted = submit(api, post_url(shortcode))
    seen_rows: set[tuple[str, str | None]] = set()
    seen_task: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = api.get(f"/analysis/posts/{submitted['analysis_id']}").json()
        seen_rows.add((row["status"], row["stage"]))
        task = api.get(f"/tasks/{submitted['task_id']}").json()
        if task["progress"]:
            seen_task.append(task["progress"])
        if row["status"] in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert ("processing", "extract") in seen_rows, seen_rows
    assert ("completed", "store") in seen_rows, seen_rows
    extract = next(p for p in seen_task if p["stage"] == "extract")
    assert (extract["stage_index"], extract["total_stages"], extract["percent"]) == (1, 7, 0)


def test_the_same_post_is_deduplicated_unless_forced(api: httpx.Client, site: PostSite) -> None:
    shortcode = new_shortcode()
    site.routes[f"/p/{shortcode}/"] = Route(body=og_page(site, "dedup"), delay=1.5)
    first = submit(api, post_url(shortcode))
    # Another URL form of the same post joins the running analysis.
    again = submit(api, f"https://instagram.com/reel/{shortcode}?igsh=x", expected=200)
    assert again["deduplicated"] is True
    assert (again["analysis_id"], again["task_id"]) == (first["analysis_id"], first["task_id"])
    assert again["status"] in ("pending", "processing")
    forced = submit(api, post_url(shortcode), force=True)
    assert forced["deduplicated"] is False
    assert forced["analysis_id"] != first["analysis_id"]
    joined = submit(api, post_url(shortcode), expected=200)
    assert joined["analysis_id"] == forced["analysis_id"]
    for analysis_id in (first["analysis_id"], forced["analysis_id"]):
        assert wait_for_analysis(api, analysis_id, {"completed", "failed"})["status"] == "completed"
    # Finished: the next submission is a new analysis.
    assert submit(api, post_url(shortcode))["analysis_id"] not in (
        first["analysis_id"],
        forced["analysis_id"],
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/p/Cabc12345/", "not an instagram.com URL"),
        ("https://www.instagram.com/someone/", "not a post URL"),
        ("ftp://www.instagram.com/p/Cabc12345/", "expected an http(s) Instagram post URL"),
        ("https://www.instagram.com/p/a!b/", "malformed post shortcode"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(
    api: httpx.Client, url: str, message: str
) -> None:
    response = api.post("/analysis/posts", json={"url": url})
    assert response.status_code == 422
    assert message in response.json()["detail"][0]["msg"]


def test_oversized_or_malformed_content_is_refused(api: httpx.Client) -> None:
    url = post_url(new_shortcode())
    long_caption = api.post(
        "/analysis/posts", json={"url": url, "content": {"caption": "x" * 2201}}
    )
    assert long_caption.status_code == 422
    assert "at most 2200 characters" in long_caption.json()["detail"][0]["msg"]
    too_many = [{"url": f"https://cdn.example/{i}.jpg"} for i in range(11)]
    many_media = api.post("/analysis/posts", json={"url": url, "content": {"media": too_many}})
    assert many_media.status_code == 422
    not_base64 = api.post(
        "/analysis/posts", json={"url": url, "content": {"media": [{"data_base64": "%%%"}]}}
    )
    assert not_base64.status_code == 422
    assert "not valid base64" in not_base64.text
    # 2 MiB of media is above the API's 1 MiB body limit: refused before it is parsed.
    huge = api.post(
        "/analysis/posts",
        json={"url": url, "content": {"media": [{"data_base64": b64(b"\0" * 2 * 1024 * 1024)}]}},
    )
    assert huge.status_code == 413
    # Nothing was stored for any of them.
    listed = api.get("/analysis/posts", params={"limit": 100}).json()["items"]
    assert url not in [item["url"] for item in listed]


def test_an_unreachable_page_is_stored_as_failed_with_the_reason(api: httpx.Client) -> None:
    submitted = submit(api, post_url(new_shortcode()))  # the site has no such page: 404
    failed = wait_for_analysis(api, submitted["analysis_id"], {"completed", "failed"})
    assert failed["status"] == "failed"
    assert "not found" in failed["error"]
    assert failed["finished_at"] is not None
    assert failed["stages"] == []
    task = poll_until(api, submitted["task_id"], {"failed"}, timeout=5)
    assert task["error"] == f"AnalysisFailed: {failed['error']}"


def test_non_image_bytes_are_noted_not_fatal(api: httpx.Client) -> None:
    submitted = submit(
        api,
        post_url(new_shortcode()),
        content={
            "caption": "just text",
            "media": [{"data_base64": b64(b"this is not a picture"), "content_type": "image/png"}],
        },
    )
    done = wait_for_analysis(api, submitted["analysis_id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    ai = stage(done, "ai_generated")
    assert ai["status"] == "unavailable"
    assert "not an image" in str(ai), ai
    assert "ai_generated" in done["trust"]["missing_signals"]


def test_the_example_plugin_runs_in_the_worker(api: httpx.Client) -> None:
    submitted = submit(
        api,
        post_url(new_shortcode()),
        content={"caption": "THEY DON'T WANT YOU TO KNOW THIS!!! share now"},
    )
    done = wait_for_analysis(api, submitted["analysis_id"], {"completed", "failed"})
    shouting = stage(done, "shouting")
    assert shouting["status"] == "ok"
    assert shouting["signal"]["score"] == 0.908
    assert shouting["signal"]["evidence"] == ["76% of letters in capitals, 3 exclamation marks"]


def test_unknown_and_malformed_ids(api: httpx.Client) -> None:
    unknown = str(uuid.uuid4())
    response = api.get(f"/analysis/posts/{unknown}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"analysis {unknown} not found"}
    assert api.get("/analysis/posts/not-a-uuid").status_code == 422
    assert api.delete("/claims/987654321").status_code == 404
    assert api.delete("/claims/abc").status_code == 422


def test_listing_is_newest_first_and_paginated(api: httpx.Client) -> None:
    mine = [
        submit(api, post_url(new_shortcode()), content={"caption": f"post {i}"})["analysis_id"]
        for i in range(5)
    ]
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/analysis/posts", params=params)
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    ids = [item["analysis_id"] for item in seen]
    assert len(ids) == len(set(ids))
    assert ids[:5] == list(reversed(mine))
    created = [item["created_at"] for item in seen]
    assert created == sorted(created, reverse=True)
    bad = api.get("/analysis/posts", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422
    assert "invalid cursor" in bad.json()["detail"]
    assert api.get("/analysis/posts", params={"limit": 101}).status_code == 422


def test_claims_api(api: httpx.Client) -> None:
    added = api.post(
        "/claims",
        json={"text": "  The moon landing was staged ", "verdict": "disputed", "sources": []},
    )
    assert added.status_code == 201
    claim = added.json()
    assert (claim["text"], claim["verdict"]) == ("The moon landing was staged", "disputed")
    everything = api.get("/claims", params={"limit": 500}).json()["items"]
    assert claim in everything
    first_page = api.get("/claims", params={"limit": 1}).json()
    assert len(first_page["items"]) == 1
    assert first_page["next_after_id"] == first_page["items"][0]["id"]
    assert api.delete(f"/claims/{claim['id']}").status_code == 204
    assert api.delete(f"/claims/{claim['id']}").status_code == 404
    for bad in (
        {"text": "x", "verdict": "true"},
        {"text": "!!! ???", "verdict": "false"},
        {"text": "ok claim here", "verdict": "false", "sources": ["javascript:alert(1)"]},
        {"text": "ok claim here", "verdict": "false", "extra": 1},
    ):
        assert api.post("/claims", json=bad).status_code == 422, bad


def test_readiness_includes_the_database(api: httpx.Client) -> None:
    body = api.get("/health/ready").json()
    assert body["status"] == "ok"
    assert body["dependencies"]["database"]["ok"] is True
    # The URL only on the detail (open with keys off, as here).
    assert "url" not in body["dependencies"]["database"]
    detail = api.get("/health/detail").json()
    assert detail["dependencies"]["database"]["url"].startswith("sqlite:///")


def test_a_database_outage_answers_503_naming_the_database(
    tmp_path: Path,
) -> None:
    # A server of our own, so the test can stop it.
    with throwaway_cluster() as cluster:
        stack = ServiceStack(
            workdir=tmp_path, with_worker=False, env_overrides={"DATABASE_URL": cluster.url}
        )
        stack.start()
        try:
            with stack.client() as api:
                assert submit(api, post_url(new_shortcode()))["status"] == "submitted"
                assert api.get("/health/ready").json()["dependencies"]["database"]["ok"]
                cluster.stop()
                started = time.monotonic()
                response = api.post("/analysis/posts", json={"url": post_url(new_shortcode())})
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert response.json()["dependency"] == "database"
                assert "database unavailable" in response.json()["detail"]
                assert elapsed < 6
                ready = api.get("/health/ready")
                assert ready.status_code == 503
                assert ready.json()["dependencies"]["database"]["ok"] is False
                assert ready.json()["dependencies"]["broker"]["ok"] is True
        finally:
            stack.stop()


def test_a_redis_outage_answers_503_and_frees_the_post(tmp_path: Path) -> None:
    stack = ServiceStack(workdir=tmp_path, with_worker=False).start()
    try:
        assert stack.redis is not None
        stack.redis.stop()
        url = post_url(new_shortcode())
        with stack.client() as api:
            response = api.post("/analysis/posts", json={"url": url})
            assert response.status_code == 503, response.text
            assert response.json()["dependency"] in ("result backend", "broker")
            # Stored, but as failed: it will never run, so it must not capture the post.
            newest = api.get("/analysis/posts", params={"limit": 1}).json()["items"][0]
            assert newest["url"] == url
            assert newest["status"] == "failed"
            assert newest["error"].startswith(f"not queued: {response.json()['dependency']}")
            again = api.post("/analysis/posts", json={"url": url})
            assert again.status_code == 503
            assert again.json().get("deduplicated") is None
    finally:
        stack.stop()


@pytest.fixture
def celery_client(analysis_stack: ServiceStack) -> Iterator[Celery]:
    """A plain Celery client on the stack's Redis, to deliver task messages as a broker would."""
    env = analysis_stack.env()
    app = create_celery_app(
        Settings(REDIS_URL=env["REDIS_URL"], RESULT_BACKEND_URL=env["RESULT_BACKEND_URL"])
    )
    try:
        yield app
    finally:
        app.close()


def stored_rows(stack: ServiceStack, analysis_id: str) -> tuple[int, int]:
    """(analysis rows, stage rows) for the id, read straight from the stack's SQLite file."""
    engine = create_db_engine(stack.env()["DATABASE_URL"])
    try:
        with engine.connect() as connection:
            analyses = connection.execute(
                text("SELECT count(*) FROM analyses WHERE id = :id"), {"id": analysis_id}
            ).scalar_one()
            stages = connection.execute(
                text("SELECT count(*) FROM stage_results WHERE analysis_id = :id"),
                {"id": analysis_id},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(analyses), int(stages)


def test_a_task_delivered_twice_stores_one_result(
    api: httpx.Client, site: PostSite, analysis_stack: ServiceStack, celery_client: Celery
) -> None:
    shortcode = new_shortcode()
    site.routes[f"/p/{shortcode}/"] = Route(body=og_page(site, "twice"), delay=1.0)
    submitted = submit(api, post_url(shortcode))
    # A second delivery of the same analysis while the first runs (what a redelivery after a
    # lost ack looks like to the worker): both run in parallel and both store.
    duplicate = celery_client.send_task(
        "analysis.process_post", args=[submitted["analysis_id"]], task_id=str(uuid.uuid4())
    )
    assert duplicate.get(timeout=30)["analysis_id"] == submitted["analysis_id"]
    done = wait_for_analysis(api, submitted["analysis_id"], {"completed", "failed"})
    assert done["status"] == "completed"
    poll_until(api, submitted["task_id"], {"completed"}, timeout=30)
    assert stored_rows(analysis_stack, submitted["analysis_id"]) == (1, len(STAGES))
    # A third delivery after completion finds the stored result and does not redo it.
    hits = site.hits[f"/p/{shortcode}/"]
    late = celery_client.send_task("analysis.process_post", args=[submitted["analysis_id"]])
    assert late.get(timeout=30)["trust_score"] == done["trust_score"]
    assert site.hits[f"/p/{shortcode}/"] == hits
    assert stored_rows(analysis_stack, submitted["analysis_id"]) == (1, len(STAGES))


def test_an_unknown_analysis_fails_the_task_once_with_a_reason(celery_client: Celery) -> None:
    missing = str(uuid.uuid4())
    result = celery_client.send_task("analysis.process_post", args=[missing])
    with pytest.raises(Exception, match=f"analysis {missing} does not exist") as failure:
        result.get(timeout=30)
    assert type(failure.value).__name__ == "AnalysisNotFound"
    assert result.state == "FAILURE"


def test_cancelling_the_task_fails_the_analysis(api: httpx.Client, site: PostSite) -> None:
    shortcode = new_shortcode()
    site.routes[f"/p/{shortcode}/"] = Route(body=og_page(site, "cancel me"), delay=3.0)
    submitted = submit(api, post_url(shortcode))
    wait_for_analysis(api, submitted["analysis_id"], {"processing"}, timeout=10)
    cancelled = api.delete(f"/tasks/{submitted['task_id']}")
    assert cancelled.status_code == 200, cancelled.text
    failed = wait_for_analysis(api, submitted["analysis_id"], {"failed", "completed"}, timeout=10)
    assert failed["status"] == "failed"
    assert failed["error"] == f"cancelled (task {submitted['task_id']} revoked)"
    # The post is free again: a new submission starts a new analysis.
    assert submit(api, post_url(shortcode))["analysis_id"] != submitted["analysis_id"]


@pytest.mark.timeout(150)
def test_a_worker_killed_mid_analysis_leaves_one_result_after_redelivery(
    tmp_path: Path, site: PostSite
) -> None:
    # Short limits so Redis hands the unacked task to another worker within ~20 s.
    limits = {
        "BROKER_VISIBILITY_TIMEOUT": "8",
        "TASK_TIME_LIMIT": "6",
        "TASK_SOFT_TIME_LIMIT": "5",
        "POST_FETCH_BASE_URL": site.base_url,
    }
    stack = ServiceStack(workdir=tmp_path, with_worker=False, env_overrides=limits).start()
    first: Worker | None = None
    second: Worker | None = None
    try:
        first = start_worker(stack, "worker-a")
        shortcode = new_shortcode()
        page = f"/p/{shortcode}/"
        site.routes[page] = Route(body=og_page(site, "killed mid-way"), delay=3.0)
        with stack.client() as api:
            submitted = submit(api, post_url(shortcode))
            analysis_id = submitted["analysis_id"]
            wait_until(lambda: site.hits.get(page), 10, what="the page fetch to start")
            kill_group(first.proc)
            assert api.get(f"/analysis/posts/{analysis_id}").json()["status"] == "processing"
            second = start_worker(stack, "worker-b")
            done = wait_for_analysis(api, analysis_id, {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed", done
        assert [s["name"] for s in done["stages"]] == [s for s in STAGES if s != "shouting"]
        # Delivered (and the page fetched) twice; stored once.
        assert (
            deliveries([first.log(), second.log()], "analysis.process_post")[submitted["task_id"]]
            == 2
        )
        assert site.hits[page] == 2
        assert stored_rows(stack, analysis_id) == (1, len(STAGES) - 1)
    finally:
        stop_quietly(first, second)
        stack.stop()
