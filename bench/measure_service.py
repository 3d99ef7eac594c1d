"""The service's figures: HTTP submissions, drains, end-to-end latency and memory."""

from __future__ import annotations

import http.client
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.figures import Run
from bench.httpgen import BACKLOG_GRACE
from bench.procs import (
    drain_rate,
    otlp_sink,
    phase,
    process_rss,
    set_consuming,
    tree_cpu_seconds,
    wait_drained,
    wait_idle,
)
from bench.raw import PARENT_GROWTH_KEY, PER_TASKS, STATS, drain_key, e2e_key
from bench.service import Observability, Service, cpu_count, generate_load
from bench.sizes import Sizes
from bench.stats import latency_summary, mib, rate
from trustcard.task_model.names import QUEUE

GROUP = "Service (trustcard api + worker, recycling at 50)"
GROUP_MEMORY = "Memory"
CLIENT_LEVELS = (1, 16, 64)
FINISHED = {"completed", "failed", "cancelled"}
POLL_INTERVAL = 0.005  # a client polling GET /tasks/{id} every 5 ms
OPEN_LOOP_SHARE = 0.7
GENERATOR = "bench.httpgen (raw asyncio HTTP/1.1 keep-alive, uvloop when installed)"


@dataclass(frozen=True)
class ApiProcesses:
    """How many API processes serve a submission run, and the figures' keys and labels."""

    processes: int

    @property
    def key(self) -> str:
        return "svc.http" if self.processes == 1 else "svc.httpN"

    @property
    def label(self) -> str:
        return "1 API process" if self.processes == 1 else f"{self.processes} API processes"


class HttpClient:
    """A keep-alive stdlib HTTP client: ~50 µs per request, so e2e times the service."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)

    def call(self, method: str, target: str) -> tuple[int, dict[str, Any]]:
        self.connection.request(method, target)
        response = self.connection.getresponse()
        body: dict[str, Any] = json.loads(response.read())
        return response.status, body

    def close(self) -> None:
        self.connection.close()


def end_to_end(base_url: str, count: int, long_poll: bool) -> list[float]:
    """count + 1 sequential test.add, each timed from POST until `completed` is seen; [0] cold.

    long_poll: one GET /tasks/{id}?wait=5 (woken by the result's publish); else a GET every
    POLL_INTERVAL seconds.
    """
    client = HttpClient(base_url)
    latencies_ms: list[float] = []
    try:
        for _ in range(count + 1):
            started = time.perf_counter()
            status, body = client.call("POST", "/tasks/test/add?x=1&y=2")
            if status != 202:
                raise RuntimeError(f"submission answered {status}: {body}")
            target = f"/tasks/{body['task_id']}" + ("?wait=5" if long_poll else "")
            while True:
                status, body = client.call("GET", target)
                if status != 200:
                    raise RuntimeError(f"GET {target} answered {status}: {body}")
                if body["status"] in FINISHED:
                    break
                if not long_poll:
                    time.sleep(POLL_INTERVAL)
            if body["status"] != "completed":
                raise RuntimeError(f"task {body['task_id']} ended {body['status']}")
            latencies_ms.append((time.perf_counter() - started) * 1000)
    finally:
        client.close()
    return latencies_ms[1:]


def _add_latencies(
    run: Run, prefix: str, label: str, samples: list[float], baseline_of: dict[str, str]
) -> None:
    summary = latency_summary(samples)
    for stat in STATS:
        run.add(
            f"{prefix}.{stat}",
            GROUP,
            f"{label} {stat}",
            summary[stat],
            "ms",
            "lower",
            baseline=baseline_of.get(stat),
        )


def measure_end_to_end(run: Run, service: Service, sizes: Sizes) -> None:
    """HTTP polling, HTTP long-poll, and a plain Celery client's apply_async -> get()."""
    raw50 = {stat: e2e_key(50, stat) for stat in STATS}
    raw0 = {stat: e2e_key(0, stat) for stat in STATS}
    polled = end_to_end(service.base_url, sizes.e2e, long_poll=False)
    _add_latencies(
        run,
        "svc.e2e.poll",
        f"HTTP submit → completed, polling every {POLL_INTERVAL * 1000:g} ms",
        polled,
        raw50,
    )
    run.samples["service e2e, HTTP polling"] = polled
    waited = end_to_end(service.base_url, sizes.e2e, long_poll=True)
    _add_latencies(run, "svc.e2e.wait", "HTTP submit → completed, ?wait=5 long-poll", waited, raw50)
    run.samples["service e2e, HTTP ?wait= long-poll"] = waited
    result = service.celery_client("e2e", sizes.e2e, timeout=600)
    direct = [float(x) for x in result["latencies_ms"]][1:]
    _add_latencies(run, "svc.worker.e2e", "our worker: apply_async → result.get()", direct, raw0)
    run.samples["our worker e2e (Celery client), recycling at 50"] = direct


def _clients(n: int) -> str:
    return f"{n} client" if n == 1 else f"{n} clients"


def measure_submissions(
    run: Run, service: Service, sizes: Sizes, base_url: str, api: ApiProcesses
) -> None:
    """Closed loops at 1, 16 and 64 clients, then paced loads at 70 % (worker stopped)."""
    cpu_notes: list[str] = []
    for clients in CLIENT_LEVELS:
        outcome = generate_load(
            base_url,
            "closed",
            _processes(clients),
            sizes.http_seconds,
            clients=clients,
            requests=sizes.http_requests,
        )
        service.purge_queue()
        _check(outcome, _clients(clients))
        summary = latency_summary(outcome["latencies_ms"])
        key = f"{api.key}.c{clients}"
        run.add(
            f"{key}.rate",
            GROUP,
            f"POST /tasks/test/add, {_clients(clients)}, {api.label}",
            rate(outcome["requests"], outcome["seconds"]),
            "req/s",
            "higher",
            baseline="raw.celery.produce",
        )
        for stat in ("p50", "p99"):
            run.add(
                f"{key}.{stat}",
                GROUP,
                f"POST latency {stat}, {_clients(clients)}, {api.label}",
                summary[stat],
                "ms",
                "lower",
                baseline=f"raw.celery.produce.{stat}",
            )
        run.samples[f"service POST, {_clients(clients)}, {api.label}"] = outcome["latencies_ms"]
        cpu_notes.append(f"{_clients(clients)}: {_cpu_share(outcome):.0%}")
    run.notes.append(
        f"Load generator ({api.label}): {GENERATOR}; its own CPU use (of one core) while timing: "
        + ", ".join(cpu_notes)
        + "."
    )
    target_rate = run.value("raw.celery.produce")
    capacity = run.value(f"{api.key}.c64.rate")
    paced = (
        ("open70", target_rate, "70 % of the raw apply_async loop"),
        ("open70own", capacity, "70 % of our 64-client rate"),
    )
    for name, reference, what in paced:
        if not reference:
            continue
        offered = OPEN_LOOP_SHARE * reference
        outcome = generate_load(base_url, "open", 2, sizes.open_loop_seconds, rate=offered)
        service.purge_queue()
        _check(outcome, name)
        summary = latency_summary(outcome["latencies_ms"])
        label = f"paced {offered:.0f}/s ({what}), {api.label}"
        run.add(
            f"{api.key}.{name}.rate",
            GROUP,
            f"{label}: answered",
            rate(outcome["requests"] - outcome["dropped"], outcome["seconds"]),
            "req/s",
            "higher",
        )
        for stat in ("p50", "p99"):
            run.add(
                f"{api.key}.{name}.{stat}",
                GROUP,
                f"{label}: latency {stat}",
                summary[stat],
                "ms",
                "lower",
            )
        run.samples[f"service POST paced, {what}, {api.label}"] = outcome["latencies_ms"]
        if outcome["dropped"]:
            run.notes.append(
                f"Paced load at {what} ({api.label}): the API fell behind; {outcome['dropped']} of "
                f"{outcome['requests']} due submissions were still waiting "
                f"{BACKLOG_GRACE:g} s after the window and were dropped, timed as waited so far "
                "(so that p99 is a lower bound)."
            )


def _processes(clients: int) -> int:
    """Generator processes: one per 32 clients, so no event loop of ours is the bottleneck."""
    return max(1, clients // 32)


def _cpu_share(outcome: dict[str, Any]) -> float:
    seconds = float(outcome["seconds"]) * int(outcome["processes"])
    return float(outcome["cpu_seconds"]) / seconds if seconds else 0.0


def _check(outcome: dict[str, Any], what: str) -> None:
    if outcome["errors"] or not outcome["requests"]:
        raise RuntimeError(f"{what}: {outcome['errors']} errors in {outcome['requests']} requests")


# Off, on, events, events, on, off: a drift of the machine (or of Redis's state) over the
# drains weighs on every variant alike; each variant's figure is the mean of its two drains.
DRAIN_ORDER = ("off", "on", "events", "events", "on", "off")


def measure_drains(run: Run, service: Service, sizes: Sizes, workdir: Path) -> None:
    """N test.add queued while no worker runs, then drained with observability off and on,
    and with task events on."""
    assert service.redis is not None
    broker, backend = service.redis.url(0), service.redis.url(1)
    with otlp_sink(workdir) as sink_url:
        variants = {
            "off": (
                Observability(metrics=False, tracing_endpoint=None),
                "metrics not served, tracing off",
                drain_key(0),
            ),
            "on": (
                Observability(metrics=True, tracing_endpoint=sink_url),
                "metrics served and scraped 1/s, traces to an OTLP sink",
                "svc.drain.off",
            ),
            # What worker.taskEvents costs (Flower's input): off's worker plus task events.
            "events": (
                Observability(metrics=False, tracing_endpoint=None, task_events=True),
                "task events on (WORKER_SEND_TASK_EVENTS), metrics and tracing off",
                "svc.drain.off",
            ),
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        # CPU ms per task of the worker (parent and pool children) and of redis-server: less
        # swayed than the rate by other load on a shared machine.
        cpu: dict[str, dict[str, list[float]]] = {
            part: {name: [] for name in variants} for part in ("worker", "redis")
        }
        assert service.redis.process is not None
        redis_pid = service.redis.process.pid
        exported = 0
        for name in DRAIN_ORDER:
            observability = variants[name][0]
            service.stop_worker()
            outcome = generate_load(
                service.base_url, "closed", 1, 3600, clients=16, requests=sizes.drain, keep_ids=True
            )
            _check(outcome, f"drain {name} submissions")
            ids = [str(x) for x in outcome["task_ids"]]
            exports_before = _sink_exports(sink_url)
            worker_pid = service.start_worker(observability)
            before = (tree_cpu_seconds(worker_pid), tree_cpu_seconds(redis_pid))
            with service.scraping():
                done_at = wait_drained(broker, backend, QUEUE, ids, 60 + sizes.drain / 20)
            after = (tree_cpu_seconds(worker_pid), tree_cpu_seconds(redis_pid))
            for part, start, end in zip(("worker", "redis"), before, after, strict=True):
                cpu[part][name].append((end - start) * 1000 / len(ids))
            service.stop_worker()  # flushes pending spans
            rates[name].append(drain_rate(done_at))
            if observability.tracing_endpoint:
                exported += _sink_exports(sink_url) - exports_before
        for name, (_, what, baseline) in variants.items():
            run.add(
                f"svc.drain.{name}",
                GROUP,
                f"drain {sizes.drain} queued test.add, {what} (mean of 2)",
                statistics.fmean(rates[name]),
                "tasks/s",
                "higher",
                baseline=baseline,
            )
        for part, per_variant in cpu.items():
            for name, (_, what, _baseline) in variants.items():
                run.add(
                    f"svc.drain.{name}.{part}_cpu",
                    GROUP,
                    f"{part} CPU per task over that drain, {what} (mean of 2)",
                    statistics.fmean(per_variant[name]),
                    "ms/task",
                    "lower",
                    baseline=None if name == "off" else f"svc.drain.off.{part}_cpu",
                )
        run.notes.append(
            "Drains in the order "
            + ", ".join(DRAIN_ORDER)
            + ": "
            + ", ".join(
                f"{name} {' / '.join(f'{r:.0f}' for r in rates[name])} tasks/s" for name in variants
            )
            + f"; with tracing on the OTLP sink received {exported} exports; /metrics scraped "
            f"{len(service.scraped)} times."
        )
        if not exported:
            raise RuntimeError("tracing was on but the OTLP sink received nothing")


def _sink_exports(sink_url: str) -> int:
    client = HttpClient(sink_url)
    try:
        _, body = client.call("GET", "/stats")
    finally:
        client.close()
    return int(body["exports"])


def measure_memory(run: Run, service: Service, sizes: Sizes, idle: tuple[int, int]) -> None:
    """API RSS and worker PSS: idle, after a warm-up, and along `memory_tasks` more tasks.

    The worker is the one started with the default settings for the end-to-end runs.
    """
    broker = service.redis_url
    warmup = max(50, sizes.memory_tasks // 20)
    _submit_and_wait(service, broker, warmup)
    warm = (service.api_rss(), service.worker_pss())
    parent_warm = process_rss(service.worker_pid)
    series = [(0, mib(warm[0]), mib(warm[1]), mib(parent_warm))]
    chunk = max(1, sizes.memory_tasks // sizes.memory_checkpoints)
    done = 0
    while done < sizes.memory_tasks:
        count = min(chunk, sizes.memory_tasks - done)
        _submit_and_wait(service, broker, count)
        done += count
        parent = mib(process_rss(service.worker_pid))
        series.append((done, mib(service.api_rss()), mib(service.worker_pss()), parent))
    run.rss_series = series
    final_api, final_worker, final_parent = series[-1][1], series[-1][2], series[-1][3]
    n = f"{sizes.memory_tasks:,}"
    rows = (
        ("svc.api_rss.idle", "API RSS idle (fresh start)", mib(idle[0]), None),
        (
            "svc.api_rss.warm",
            f"API RSS after warm-up ({warmup} tasks + the runs above)",
            mib(warm[0]),
            None,
        ),
        ("svc.api_rss.after", f"API RSS after {n} more tasks", final_api, None),
        (
            "svc.api_rss.growth",
            f"API RSS growth over those {n} tasks",
            final_api - mib(warm[0]),
            None,
        ),
        (
            "svc.worker_pss.idle",
            "worker PSS idle (parent + 2 children)",
            mib(idle[1]),
            "raw.celery.worker_pss",
        ),
        ("svc.worker_pss.warm", f"worker PSS after warm-up ({warmup} tasks)", mib(warm[1]), None),
        ("svc.worker_pss.after", f"worker PSS after {n} more tasks", final_worker, None),
        (
            "svc.worker_pss.growth",
            f"worker PSS growth over those {n} tasks",
            final_worker - mib(warm[1]),
            None,
        ),
    )
    for key, label, value, baseline in rows:
        run.add(key, GROUP_MEMORY, label, value, "MiB", "lower", baseline=baseline)
    # Per 1,000 tasks, like the raw worker's figure (measured over its drain).
    run.add(
        "svc.worker_parent_growth",
        GROUP_MEMORY,
        f"worker parent RSS growth over those {n} tasks, per {PER_TASKS:,} tasks",
        (final_parent - mib(parent_warm)) * PER_TASKS / sizes.memory_tasks,
        f"MiB/{PER_TASKS:,} tasks",
        "lower",
        baseline=PARENT_GROWTH_KEY,
    )


def _submit_and_wait(service: Service, broker: str, count: int) -> None:
    outcome = generate_load(service.base_url, "closed", 1, 3600, clients=16, requests=count)
    _check(outcome, "memory run submissions")
    wait_idle(broker, QUEUE, 60 + count / 20)


def measure_all(run: Run, workdir: Path, sizes: Sizes) -> None:
    service = Service(workdir / "service")
    try:
        with phase("start"):
            service.start()
            time.sleep(1.0)  # let start-up settle before the idle sample
            api_idle = service.api_rss()
        with phase("drains"):
            # First, on a fresh redis-server, as the raw drains are: later phases leave tens
            # of thousands of task records and results behind (and AOF rewrites).
            measure_drains(run, service, sizes, workdir)
        with phase("start worker"):
            service.start_worker()
            time.sleep(1.0)
            idle = (api_idle, service.worker_pss())
        with phase("end-to-end"):
            measure_end_to_end(run, service, sizes)
        with phase("submissions"):
            # Like the raw producer loop: nothing consumes while submissions are timed.
            set_consuming(service.redis_url, QUEUE, consuming=False)
            measure_submissions(run, service, sizes, service.base_url, ApiProcesses(1))
            # The API as it would run on this host: one process per core (API_WORKERS).
            processes = max(2, cpu_count())
            with service.extra_api(processes) as base_url:
                measure_submissions(run, service, sizes, base_url, ApiProcesses(processes))
            set_consuming(service.redis_url, QUEUE, consuming=True)
        with phase("memory"):
            measure_memory(run, service, sizes, idle)
    finally:
        service.stop()
