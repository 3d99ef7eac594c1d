"""Database faults during a run of analyses: every analysis ends completed or failed, none stuck.

Real processes: redis-server, `trustcard worker`, `trustcard api`, a PostgreSQL cluster the test
starts (and restarts) itself, SQLite locked by another connection. Pages are served slowly by a
local site so tasks are in every step (starting, fetching, storing) when the fault hits. Each
test prints sent / completed / failed / stuck / seconds.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.postgres_server import Cluster, throwaway_cluster
from tests.stack import ServiceStack, wait_until
from tests.unit.analysis.conftest import PostSite, Route
from tests.unit.analysis.test_extraction import og_page

pytestmark = pytest.mark.integration

RUNS = 10
PAGE_DELAY_SECONDS = 1.0
FINAL = {"completed", "failed"}


@pytest.fixture
def slow_site() -> Iterator[PostSite]:
    with PostSite() as site:
        yield site


def _slow_posts(site: PostSite, count: int) -> list[str]:
    shortcodes = ["C" + uuid.uuid4().hex[:10] for _ in range(count)]
    for code in shortcodes:
        site.routes[f"/p/{code}/"] = Route(
            body=og_page(site, f"caption of {code}"), delay=PAGE_DELAY_SECONDS
        )
    return shortcodes


def _submit_all(api: httpx.Client, shortcodes: list[str]) -> list[str]:
    ids = []
    for code in shortcodes:
        response = api.post("/analysis/posts", json={"url": f"https://www.instagram.com/p/{code}/"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["analysis_id"])
    return ids


def _statuses(api: httpx.Client, ids: list[str]) -> dict[str, str]:
    found = {}
    for analysis_id in ids:
        response = api.get(f"/analysis/posts/{analysis_id}")
        found[analysis_id] = response.json()["status"] if response.status_code == 200 else "?"
    return found


def _wait_all_final(api: httpx.Client, ids: list[str], timeout: float) -> dict[str, str]:
    last: dict[str, str] = {}

    def done() -> bool:
        nonlocal last
        try:
            last = _statuses(api, ids)
        except httpx.HTTPError:
            return False
        return all(s in FINAL for s in last.values())

    # Timing out is reported by the caller's assertion on the statuses, with the figures.
    with contextlib.suppress(AssertionError):
        wait_until(done, timeout, 0.5, "every analysis to end completed or failed")
    return last


def _report(name: str, ids: list[str], statuses: dict[str, str], started: float) -> None:
    values = list(statuses.values())
    print(
        f"\n{name}: sent {len(ids)} / completed {values.count('completed')} / "
        f"failed {values.count('failed')} / stuck {sum(v not in FINAL for v in values)} / "
        f"{time.monotonic() - started:.1f} s from the fault to the last final state"
    )


def _stack(tmp_path: Path, site: PostSite, retry_seconds: float, **env: str) -> ServiceStack:
    return ServiceStack(
        workdir=tmp_path,
        env_overrides={
            "POST_FETCH_BASE_URL": site.base_url,
            "POST_FETCH_TIMEOUT_SECONDS": "5",
            "DATABASE_RETRY_SECONDS": str(retry_seconds),
            **env,
        },
    )


def _pg_outage(cluster: Cluster, seconds: float) -> None:
    cluster.stop()
    time.sleep(seconds)
    cluster.restart()


@pytest.mark.parametrize(
    ("retry_seconds", "outage_seconds"),
    [(30.0, 3.0), (1.0, 10.0)],
    ids=["restart-within-the-retry-bound", "outage-longer-than-the-bound"],
)
def test_postgresql_restarted_during_a_run(
    tmp_path: Path, slow_site: PostSite, retry_seconds: float, outage_seconds: float
) -> None:
    with throwaway_cluster() as cluster:
        stack = _stack(tmp_path, slow_site, retry_seconds, DATABASE_URL=cluster.url).start()
        try:
            with stack.client() as api:
                ids = _submit_all(api, _slow_posts(slow_site, RUNS))
                time.sleep(PAGE_DELAY_SECONDS / 2)  # the first two are fetching now
                started = time.monotonic()
                _pg_outage(cluster, outage_seconds)
                bound = retry_seconds + RUNS * PAGE_DELAY_SECONDS + 60
                statuses = _wait_all_final(api, ids, bound)
                _report(f"PostgreSQL down {outage_seconds:g} s", ids, statuses, started)
                assert [s for s in statuses.values() if s not in FINAL] == []
                if retry_seconds > outage_seconds:
                    assert set(statuses.values()) == {"completed"}
                else:
                    failed = [api.get(f"/analysis/posts/{i}").json() for i in ids]
                    reasons = {a["error"] for a in failed if a["status"] == "failed"}
                    assert reasons, "an outage past the bound must fail some analyses"
                    assert all(r for r in reasons)
                # No dead analysis captures its post: a new submission starts a fresh one.
                first = api.get(f"/analysis/posts/{ids[0]}").json()
                again = api.post("/analysis/posts", json={"url": first["url"]})
                assert again.status_code == 202, again.text
                assert again.json()["deduplicated"] is False
        finally:
            stack.stop()


def test_sqlite_locked_for_12_seconds_during_a_run(tmp_path: Path, slow_site: PostSite) -> None:
    stack = _stack(tmp_path, slow_site, retry_seconds=30.0).start()
    database = tmp_path / "trustcard.db"
    try:
        with stack.client() as api:
            ids = _submit_all(api, _slow_posts(slow_site, RUNS))
            time.sleep(PAGE_DELAY_SECONDS / 2)
            locker = sqlite3.connect(
                database, timeout=10, isolation_level=None, check_same_thread=False
            )
            locker.execute("BEGIN EXCLUSIVE")  # writers wait (WAL readers go on)
            started = time.monotonic()
            release = threading.Timer(12.0, lambda: locker.execute("COMMIT"))
            release.start()
            try:
                statuses = _wait_all_final(api, ids, 12 + RUNS * PAGE_DELAY_SECONDS + 60)
            finally:
                release.join()
                locker.close()
            _report("SQLite locked 12 s", ids, statuses, started)
            assert set(statuses.values()) == {"completed"}, statuses
    finally:
        stack.stop()


def test_dedup_settles_an_analysis_whose_task_failed_without_telling_the_database(
    tmp_path: Path, slow_site: PostSite
) -> None:
    """The row says pending, its task ended failed: the next submission must not join it."""
    stack = _stack(tmp_path, slow_site, retry_seconds=1.0).start()
    database = tmp_path / "trustcard.db"
    try:
        with stack.client() as api:
            (code,) = _slow_posts(slow_site, 1)
            locker = sqlite3.connect(
                database, timeout=10, isolation_level=None, check_same_thread=False
            )
            (analysis_id,) = _submit_all(api, [code])
            locker.execute("BEGIN EXCLUSIVE")
            try:
                task_id = api.get(f"/analysis/posts/{analysis_id}").json()["task_id"]
                wait_until(
                    lambda: api.get(f"/tasks/{task_id}").json()["status"] == "failed",
                    30,
                    0.2,
                    "the task to give up on the locked database",
                )
            finally:
                locker.execute("COMMIT")
                locker.close()
            with sqlite3.connect(database) as raw:
                (status,) = raw.execute(
                    "SELECT status FROM analyses WHERE id = ?", (analysis_id,)
                ).fetchone()
            assert status in ("pending", "processing")  # the task could not tell the database
            again = api.post(
                "/analysis/posts", json={"url": f"https://www.instagram.com/p/{code}/"}
            )
            assert again.status_code == 202, again.text
            assert again.json()["deduplicated"] is False
            settled = api.get(f"/analysis/posts/{analysis_id}").json()
            assert settled["status"] == "failed"
            assert "its task ended failed" in settled["error"]
    finally:
        stack.stop()
