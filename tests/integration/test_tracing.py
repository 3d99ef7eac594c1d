"""One trace from HTTP submission to stored result, received by a real OTLP/HTTP endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.stack import ServiceStack, poll_until, submit, wait_until
from trustcard.redis_clients.result_backend import RESULT_STORED_EVENT

pytestmark = pytest.mark.integration

# OTLP span kinds (opentelemetry.proto.trace.v1.Span.SpanKind).
SERVER, PRODUCER, CONSUMER = 2, 4, 5


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    try:
        yield otlp
    finally:
        otlp.stop()


@pytest.fixture(scope="module")
def traced(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("traced")),
        env_overrides={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            # Export within 0.1 s instead of 5 s, so the test waits less.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "LOG_FORMAT": "json",
            # Children are recycled during these tests; test_recycling covers it at scale.
            "WORKER_MAX_TASKS_PER_CHILD": "3",
        },
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


def spans_of(receiver: OtlpReceiver, trace_id: str, *names: str) -> list[ReceivedSpan]:
    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.trace(trace_id)
        got = {s.name for s in spans}
        return spans if all(name in got for name in names) else None

    found: list[ReceivedSpan] = wait_until(complete, 20, interval=0.1, what=f"spans {names}")
    return found


def stored_states(span: ReceivedSpan) -> dict[int, str]:
    """celery.state of each "result stored" event on the span, by time (ns), in order."""
    return {
        at: str(attributes.get("celery.state"))
        for name, at, attributes in sorted(span.events, key=lambda event: event[1])
        if name == RESULT_STORED_EVENT
    }


def only(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    matching = [s for s in spans if s.name == name]
    assert len(matching) == 1, [s.name for s in spans]
    return matching[0]


def test_one_trace_from_http_submit_to_stored_result(
    traced: ServiceStack, receiver: OtlpReceiver
) -> None:
    with traced.client() as client:
        submitted = client.post("/tasks/test/long", params={"stage_seconds": 0.05}).json()
        trace_id = submitted["trace_id"]
        assert trace_id
        assert len(trace_id) == 32
        done = poll_until(client, submitted["task_id"], {"completed"})
    assert done["trace_id"] == trace_id

    stages = [f"stage {n}" for n in ("extract_content", "detect_ai_content", "detect_deepfake")]
    stages += ["stage fact_check", "stage compute_trust_score"]
    spans = spans_of(receiver, trace_id, "POST /tasks/test/long", "run/test.long_task", *stages)
    http = only(spans, "POST /tasks/test/long")
    publish = only(spans, "apply_async/test.long_task")
    run = only(spans, "run/test.long_task")
    assert (http.kind, publish.kind, run.kind) == (SERVER, PRODUCER, CONSUMER)
    assert http.service == publish.service == "trustcard-api"
    assert run.service == "trustcard-worker"

    by_id = {s.span_id: s for s in spans}

    def ancestors(span: ReceivedSpan) -> list[str]:
        chain = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span.name)
        return chain

    # HTTP span -> publish -> run, the run in another process continuing the same trace.
    assert http.name in ancestors(publish)
    assert run.parent_span_id == publish.span_id
    for name in stages:
        assert only(spans, name).parent_span_id == run.span_id
    # Stages in order, each one's progress report stored inside it, the result stored last:
    # every write of the task's state is an event on the span that made it.
    starts = [only(spans, name).start_ns for name in stages]
    assert starts == sorted(starts)
    for name in stages:
        stage = only(spans, name)
        progress = stored_states(stage)
        assert set(progress.values()) == {"PROGRESS"}, (name, stage.events)
        assert all(stage.start_ns <= at <= stage.end_ns for at in progress), name
    on_run = stored_states(run)
    assert list(on_run.values())[-1] == "SUCCESS", run.events
    assert max(on_run) >= max(starts)
    assert not [s for s in spans if s.name == "store_result"], "a state write is an event now"
    print("trace", trace_id, " -> ".join(s.name for s in sorted(spans, key=lambda s: s.start_ns)))


def test_every_pool_child_s_spans_come_from_one_worker_instance(
    traced: ServiceStack, receiver: OtlpReceiver
) -> None:
    """Children (recycled every 3 tasks here) hand their spans to the worker's main process."""
    with traced.client() as client:
        submitted = [
            client.post("/tasks/test/add", params={"x": n, "y": 1}).json() for n in range(7)
        ]
        for task in submitted:
            poll_until(client, task["task_id"], {"completed"})
    runs = [
        only(spans_of(receiver, t["trace_id"], "run/test.add"), "run/test.add") for t in submitted
    ]
    instances = {run.instance for run in runs}
    assert len(instances) == 1, instances
    assert "" not in instances


def test_status_polls_link_to_the_task_trace(traced: ServiceStack, receiver: OtlpReceiver) -> None:
    with traced.client() as client:
        submitted = client.post("/tasks/test/add", params={"x": 2, "y": 3}).json()
        poll_until(client, submitted["task_id"], {"completed"})
    trace_id = submitted["trace_id"]
    http = only(spans_of(receiver, trace_id, "POST /tasks/test/add"), "POST /tasks/test/add")

    def poll_spans() -> list[ReceivedSpan]:
        return [
            s
            for s in receiver.snapshot()
            if s.name == "GET /tasks/{task_id}" and (trace_id, http.span_id) in s.links
        ]

    polls = wait_until(poll_spans, 20, interval=0.1, what="a linked status poll span")
    # Polls are their own traces (each request is one), linked to the task's.
    assert all(p.trace_id != trace_id for p in polls)


def test_json_logs_carry_trace_and_task_ids(traced: ServiceStack) -> None:
    with traced.client() as client:
        task_id = submit(client, "/tasks/test/fail")
        body = poll_until(client, task_id, {"failed"})
    assert traced.worker is not None
    records = []
    for line in traced.worker.log().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    mine = [r for r in records if r.get("task_id") == task_id]
    assert mine, "no JSON log line carries the task id"
    assert any(r.get("trace_id") == body["trace_id"] for r in mine)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in mine)


def test_spans_of_finished_tasks_survive_their_pool_child_being_killed(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Children hand each span over as it ends: a child SIGKILLed (the OOM killer, kill -9)
    has nothing of its earlier tasks left to lose. The batch delay is ten minutes, so
    nothing is exported until the worker stops; a child buffering its own spans would have
    taken them with it."""
    stack = ServiceStack(
        workdir=tmp_path,
        env_overrides={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
        },
    ).start()
    try:
        assert stack.worker is not None
        assert stack.worker.process is not None
        main = psutil.Process(stack.worker.process.pid)
        with stack.client() as client:
            added = [
                client.post("/tasks/test/add", params={"x": n, "y": 0}).json() for n in range(6)
            ]
            for task in added:
                poll_until(client, task["task_id"], {"completed"})
        children = main.children()
        assert len(children) == 2
        for child in children:
            child.kill()
        psutil.wait_procs(children, timeout=10)
        stack.worker.stop()  # the main process exports what it holds
        for task in added:
            only(spans_of(receiver, task["trace_id"], "run/test.add"), "run/test.add")
    finally:
        stack.stop()
