"""1000 pool children recycled (max-tasks-per-child 1): no task, span, series or fd lost or leaked.

Each child hands its span to the main process as the span ends, before the child exits, so
every span received shows that none is lost to recycling; metrics live in the main process,
so no per-child file or series can pile up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.metrics_text import Samples, scrape, value
from tests.otlp_receiver import OtlpReceiver
from tests.stack import ServiceStack, submit, wait_until

pytestmark = pytest.mark.integration

CHILDREN = 1000


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    try:
        yield otlp
    finally:
        otlp.stop()


@pytest.fixture(scope="module")
def recycling(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("recycling")),
        env_overrides={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            # The main process exports what the children hand over within 0.2 s.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "WORKER_MAX_TASKS_PER_CHILD": "1",
        },
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_recycling_1000_children_loses_nothing_and_leaks_nothing(
    recycling: ServiceStack, receiver: OtlpReceiver
) -> None:
    assert recycling.worker is not None
    assert recycling.worker.process is not None
    worker_pid = recycling.worker.process.pid
    before: Samples = scrape(recycling.worker_metrics_url)
    fds_before = open_fds(worker_pid)
    files_before = files_under(recycling.workdir)

    started = time.monotonic()
    with httpx.Client(base_url=recycling.base_url, timeout=10) as client:
        ids = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(CHILDREN)]

    def succeeded() -> Samples | None:
        samples = scrape(recycling.worker_metrics_url)
        done = value(samples, "trustcard_task_succeeded_total", task_name="test.add")
        return (
            samples
            if done - value(before, "trustcard_task_succeeded_total", task_name="test.add")
            >= CHILDREN
            else None
        )

    after: Samples = wait_until(succeeded, 300, interval=0.5, what=f"{CHILDREN} tasks")
    seconds = time.monotonic() - started

    def all_spans() -> set[str] | None:
        ids_seen = {
            str(s.attributes.get("messaging.message.id"))
            for s in receiver.snapshot()
            if s.name == "run/test.add"
        }
        return ids_seen if set(ids) <= ids_seen else None

    wait_until(all_spans, 30, interval=0.2, what=f"{CHILDREN} run spans")
    runs = [s for s in receiver.snapshot() if s.name == "run/test.add"]
    fds_after = open_fds(worker_pid)
    print(
        f"{CHILDREN} tasks through {CHILDREN} children in {seconds:.1f} s; "
        f"run spans {len(runs)}; series {len(before)} -> {len(after)}; "
        f"main-process fds {fds_before} -> {fds_after}"
    )
    for outcome in ("failed", "lost", "retried"):
        assert not [
            k for k, v in after.items() if k[0] == f"trustcard_task_{outcome}_total" and v
        ], outcome
    # Each task ran exactly once, and each child's span arrived though the child exited
    # right after its one task.
    assert len(runs) == CHILDREN
    # Same series as before: nothing per child, per pid or per task id.
    assert set(after) == set(before)
    assert value(after, "trustcard_worker_processes") == 2
    assert fds_after - fds_before <= 4, (fds_before, fds_after)
    new_files = files_under(recycling.workdir) - files_before
    assert not [p for p in new_files if "redis" not in p.parts], new_files
    assert "PROMETHEUS_MULTIPROC_DIR" not in recycling.env()
