"""Draw the dashboard's panels, one PNG per row, laid out on Grafana's 24-column grid."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, PercentFormatter

if TYPE_CHECKING:
    from bench.dashboard import Series, TargetResult

MAX_LEGEND_ENTRIES = 10
# Grafana unit ids and how the axis shows them ("short": a plain number).
UNIT_SUFFIX = {"short": "", "none": "", "reqps": " req/s", "ops": " /s", "s": " s"}
GRID_COLUMNS = 24
INCH_PER_COLUMN = 0.62
INCH_PER_HEIGHT_UNIT = 0.42


def render_rows(
    dashboard: dict[str, Any], results: dict[int, list[TargetResult]], out: Path
) -> list[Path]:
    """One PNG per dashboard row (docs/images/dashboard-<row>.png); returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for title, panels in _rows(dashboard):
        path = out / f"dashboard-{_slug(title)}.png"
        _render_row(title, panels, results, path)
        written.append(path)
    return written


def _rows(dashboard: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            rows.append((panel["title"], list(panel.get("panels", []))))
        elif rows:
            rows[-1][1].append(panel)
        else:
            rows.append(("Dashboard", [panel]))
    return [(title, panels) for title, panels in rows if panels]


def _render_row(
    title: str,
    panels: Sequence[dict[str, Any]],
    results: dict[int, list[TargetResult]],
    path: Path,
) -> None:
    top = min(p["gridPos"]["y"] for p in panels)
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) - top
    figure = plt.figure(
        figsize=(GRID_COLUMNS * INCH_PER_COLUMN, height * INCH_PER_HEIGHT_UNIT + 0.6), dpi=72
    )
    grid = figure.add_gridspec(height, GRID_COLUMNS, hspace=4.5, wspace=3.0)
    for panel in panels:
        pos = panel["gridPos"]
        y = pos["y"] - top
        axes = figure.add_subplot(grid[y : y + pos["h"], pos["x"] : pos["x"] + pos["w"]])
        _draw_panel(axes, panel, results.get(panel["id"], []))
    figure.suptitle(
        f"TrustCard dashboard: {title} (x: seconds into the workload)",
        fontsize=13,
        fontweight="bold",
    )
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def _draw_panel(axes: Axes, panel: dict[str, Any], targets: list[TargetResult]) -> None:
    axes.set_title(panel["title"], fontsize=10, loc="left")
    axes.tick_params(labelsize=7)
    kind = panel["type"]
    if kind == "stat":
        _draw_stat(axes, targets)
    elif kind == "table":
        _draw_table(axes, panel, targets)
    else:
        _draw_timeseries(axes, panel, targets)


def _draw_timeseries(axes: Axes, panel: dict[str, Any], targets: list[TargetResult]) -> None:
    lines = 0
    starts = [s.points[0][0] for t in targets for s in t.series if s.points]
    t0 = min(starts, default=0.0)
    for target in targets:
        if target.external:
            axes.plot([], [], label=f"{target.legend or target.ref_id}: not scraped here")
            continue
        for series in target.series:
            times = [at - t0 for at, _ in series.points]
            values = [value for _, value in series.points]
            # Series that stayed 0 (causes that did not happen) are drawn, not listed.
            moved = any(value for value in values)
            label = _legend(target.legend, series) if moved and lines < MAX_LEGEND_ENTRIES else None
            axes.plot(times, values, linewidth=1.2, label=label)
            lines += moved
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "")
    if unit == "percentunit":
        axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    else:
        suffix = UNIT_SUFFIX.get(unit, f" {unit}" if unit else "")
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{suffix}"))
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.6)


def _draw_stat(axes: Axes, targets: list[TargetResult]) -> None:
    axes.axis("off")
    values = [s.points[-1][1] for t in targets for s in t.series if s.points]
    text = ", ".join(f"{v:g}" for v in values) if values else "no data"
    axes.text(0.5, 0.45, text, ha="center", va="center", fontsize=28, fontweight="bold")


def _draw_table(axes: Axes, panel: dict[str, Any], targets: list[TargetResult]) -> None:
    axes.axis("off")
    series = [s for t in targets for s in t.series]
    if not series:
        axes.text(0.5, 0.5, "no data", ha="center", va="center")
        return
    columns = sorted({k for s in series for k in s.labels} - {"__name__", "job", "instance"})
    cells = [[s.labels.get(c, "") for c in columns] for s in series]
    table = axes.table(cellText=cells, colLabels=columns, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.auto_set_column_width(list(range(len(columns))))


def _legend(template: str, series: Series) -> str:
    if not template:
        return ", ".join(f"{k}={v}" for k, v in series.labels.items()) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: series.labels.get(m.group(1), ""), template)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
