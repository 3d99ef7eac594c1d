"""The figures of one run, each tied to the baseline it is divided by."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower"]


@dataclass
class Figure:
    key: str
    group: str
    label: str
    unit: str
    value: float | None  # None: could not be measured (the note says why)
    better: Better
    # Key of the figure this one is divided by; None: a baseline itself, or nothing comparable.
    baseline: str | None = None
    note: str = ""
    baseline_value: float | None = None
    ratio: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Run:
    """Everything one benchmark run measured."""

    figures: dict[str, Figure] = field(default_factory=dict)
    # Raw samples for the chart (latencies in ms), by name.
    samples: dict[str, list[float]] = field(default_factory=dict)
    # (tasks done, API RSS, worker parent + children PSS, worker parent RSS), MiB, along the
    # memory run.
    rss_series: list[tuple[int, float, float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Target verdicts (bench.targets.evaluate), as plain dicts for the JSON.
    targets: list[dict[str, Any]] = field(default_factory=list)
    # Groups that failed to run, with the error (the others are still reported).
    failures: dict[str, str] = field(default_factory=dict)

    def add(
        self,
        key: str,
        group: str,
        label: str,
        value: float | None,
        unit: str,
        better: Better,
        baseline: str | None = None,
        note: str = "",
    ) -> None:
        self.figures[key] = Figure(key, group, label, unit, value, better, baseline, note)

    def value(self, key: str) -> float | None:
        figure = self.figures.get(key)
        return figure.value if figure is not None else None

    def resolve_ratios(self) -> None:
        """ratio = value / baseline value, where both were measured."""
        for figure in self.figures.values():
            base = self.value(figure.baseline) if figure.baseline else None
            figure.baseline_value = base
            figure.ratio = figure.value / base if figure.value is not None and base else None
