"""Staged work with progress reports, free of Celery so it can be tested on its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from trustcard.observability.tracing import stage_span

# The five stages of the simulated analysis behind test.long_task (names mirror the real pipeline).
SIMULATED_STAGES = (
    "extract_content",
    "detect_ai_content",
    "detect_deepfake",
    "fact_check",
    "compute_trust_score",
)


@dataclass(frozen=True)
class Progress:
    """Where a staged task is; stored as the task's PROGRESS meta and shown by the API."""

    stage: str
    stage_index: int
    total_stages: int
    percent: int
    # ISO-8601 UTC, like every other time the API shows (submitted_at, finished_at).
    started_at: str

    def as_meta(self) -> dict[str, Any]:
        return asdict(self)


def utc_now_iso() -> str:
    """Now as ISO-8601 UTC (`2026-12-04T07:15:00.123456+00:00`), the API's time format."""
    return datetime.now(UTC).isoformat()


def run_simulated_stages(
    report: Callable[[Progress], None],
    stage_seconds: float,
    stages: Sequence[str] = SIMULATED_STAGES,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Walk through `stages`, reporting before each, and return a summary of what ran."""
    started_at = utc_now_iso()
    started = time.monotonic()
    done: list[dict[str, Any]] = []
    for index, stage in enumerate(stages, start=1):
        # The stage's span covers its progress report (a result-backend write) and its work.
        with stage_span(stage, index, len(stages)):
            report(
                Progress(
                    stage=stage,
                    stage_index=index,
                    total_stages=len(stages),
                    percent=round(100 * (index - 1) / len(stages)),
                    started_at=started_at,
                )
            )
            stage_start = time.monotonic()
            sleep(stage_seconds)
        done.append(
            {"stage": stage, "index": index, "seconds": round(time.monotonic() - stage_start, 3)}
        )
    return {
        "stages": done,
        "total_stages": len(stages),
        "percent": 100,
        "total_seconds": round(time.monotonic() - started, 3),
    }
