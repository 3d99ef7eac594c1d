"""latest.png: latency distributions, throughput bars and RSS along the memory run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.figures import Run

E2E_SERIES = (
    "raw Celery e2e, no recycling",
    "raw Celery e2e, recycling at 50",
    "our worker e2e (Celery client), recycling at 50",
    "service e2e, HTTP ?wait= long-poll",
    "service e2e, HTTP polling",
)
THROUGHPUT_BARS = (
    ("raw.celery.produce", "raw apply_async loop"),
    ("svc.http.c1.rate", "HTTP, 1 client"),
    ("svc.http.c16.rate", "HTTP, 16 clients"),
    ("svc.http.c64.rate", "HTTP, 64 clients"),
    ("svc.httpN.c64.rate", "HTTP, 64 cl., API/core"),
    ("raw.celery.drain.mtpc0", "raw drain, no recycling"),
    ("raw.celery.drain.mtpc50", "raw drain, recycling 50"),
    ("svc.drain.off", "our drain, obs. off"),
    ("svc.drain.on", "our drain, obs. on"),
    ("svc.drain.events", "our drain, task events"),
)


def _cdf(axes: Axes, samples: list[float], label: str) -> None:
    ordered = sorted(samples)
    n = len(ordered)
    axes.step(ordered, [(i + 1) / n for i in range(n)], where="post", label=label)


def _latencies(axes: Axes, run: Run, names: tuple[str, ...] | list[str], title: str) -> None:
    for name in names:
        if run.samples.get(name):
            _cdf(axes, run.samples[name], name)
    axes.set_xscale("log")
    axes.set_xlabel("latency, ms (log)")
    axes.set_ylabel("fraction of tasks ≤ x")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")


def _throughput(axes: Axes, run: Run) -> None:
    bars = [(label, run.value(key)) for key, label in THROUGHPUT_BARS]
    shown = [(label, value) for label, value in bars if value is not None]
    colors = ["tab:gray" if label.startswith("raw") else "tab:blue" for label, _ in shown]
    axes.barh([label for label, _ in shown], [value for _, value in shown], color=colors)
    for index, (_, value) in enumerate(shown):
        axes.text(value, index, f" {value:,.0f}", va="center", fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("per second (grey: raw baseline)")
    axes.set_title("Throughput: submissions and drains")


def _memory(axes: Axes, run: Run) -> None:
    if run.rss_series:
        tasks = [point[0] for point in run.rss_series]
        axes.plot(tasks, [point[1] for point in run.rss_series], marker="o", label="API (RSS)")
        axes.plot(
            tasks,
            [point[2] for point in run.rss_series],
            marker="o",
            label="worker, parent + children (PSS)",
        )
        axes.plot(
            tasks, [point[3] for point in run.rss_series], marker="o", label="worker parent (RSS)"
        )
        axes.set_ylim(bottom=0)
        axes.legend(fontsize=7)
    axes.set_xlabel("tasks after warm-up")
    axes.set_ylabel("MiB")
    axes.set_title("Memory along the memory run")
    axes.grid(True, alpha=0.3)


def draw(run: Run, path: Path) -> None:
    figure, grid = plt.subplots(2, 2, figsize=(14, 10))
    _latencies(grid[0][0], run, E2E_SERIES, "End-to-end latency, one task at a time")
    post = [name for name in run.samples if name.startswith("service POST")]
    _latencies(grid[0][1], run, post, "HTTP submission latency")
    _throughput(grid[1][0], run)
    _memory(grid[1][1], run)
    figure.suptitle("TrustCard vs raw Celery and Redis (one run, same machine)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
