"""One post's analysis, start to end: extract, each analyzer, trust score (storing is the task's).

Stages, in order: extract, ai_generated, deepfake, fact_check, <new plug-ins by name>,
trust_score, store. An analyzer switched off by ANALYZERS_ENABLED is listed as "skipped"; one
that raises or overruns its timeout is recorded as "failed"/"timeout" and the rest go on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from trustcard.analysis.claims import Claim
from trustcard.analysis.content import PostContent, parse_post_url
from trustcard.analysis.deepfake import DeepfakeSlot
from trustcard.analysis.extraction import Extraction, extract_fetched, extract_supplied
from trustcard.analysis.factcheck import ClaimMatcher
from trustcard.analysis.fetch import ExtractionError, FetchLimits, host_and_port
from trustcard.analysis.provenance import ProvenanceAnalyzer
from trustcard.analysis.score import TrustScore, trust_score
from trustcard.analysis.signals import (
    Analyzer,
    analyzer_weight,
    bind_claims,
    discover_analyzers,
    run_analyzer,
)
from trustcard.analysis.supplied import SuppliedContent

if TYPE_CHECKING:
    from trustcard.config import Settings

__all__ = [
    "ExtractionError",
    "PipelineConfig",
    "PipelineResult",
    "StageOutcome",
    "StageProgress",
    "run_pipeline",
]

log = logging.getLogger(__name__)

EXTRACT = "extract"
TRUST_SCORE = "trust_score"
STORE = "store"
StageStatus = Literal["ok", "failed", "timeout", "unavailable", "skipped"]


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline may do: which analyzers, and how long and how much it may fetch."""

    enabled: frozenset[str] | None = None  # None: every built-in and installed plug-in
    analyzer_timeout_seconds: float = 20.0
    fetch_timeout_seconds: float = 10.0
    fetch_max_bytes: int = 2 * 1024 * 1024
    media_max_bytes: int = 10 * 1024 * 1024
    post_base_url: str = "https://www.instagram.com"
    user_agent: str = "TrustCard/0.1"
    # Entry points to load instead of the installed ones (tests); None: the installed ones.
    plugins: Sequence[EntryPoint] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        return cls(
            enabled=settings.analyzers_enabled,
            analyzer_timeout_seconds=settings.ANALYZER_TIMEOUT_SECONDS,
            fetch_timeout_seconds=settings.POST_FETCH_TIMEOUT_SECONDS,
            fetch_max_bytes=settings.POST_FETCH_MAX_BYTES,
            media_max_bytes=settings.MEDIA_FETCH_MAX_BYTES,
            post_base_url=settings.POST_FETCH_BASE_URL,
            user_agent=settings.FETCH_USER_AGENT,
        )

    def fetch_limits(self) -> FetchLimits:
        base = host_and_port(self.post_base_url)
        return FetchLimits(
            timeout_seconds=self.fetch_timeout_seconds,
            max_page_bytes=self.fetch_max_bytes,
            max_media_bytes=self.media_max_bytes,
            user_agent=self.user_agent,
            trusted_hosts=frozenset({base} if urlsplit(self.post_base_url).hostname else set()),
        )


@dataclass(frozen=True)
class StageProgress:
    """Reported when a stage starts: percent is the share of stages already done."""

    stage: str
    stage_index: int
    total_stages: int
    percent: int


@dataclass(frozen=True)
class StageOutcome:
    name: str
    status: StageStatus
    signal: dict[str, Any] | None
    detail: str
    started_at: datetime
    finished_at: datetime
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat()
        return data


@dataclass(frozen=True)
class PipelineResult:
    content: dict[str, Any]
    stages: list[StageOutcome]
    trust: TrustScore
    stage_names: list[str] = field(default_factory=list)  # every stage, "store" last

    def as_dict(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "stages": [stage.as_dict() for stage in self.stages],
            "trust": self.trust.as_dict(),
        }

    def store_progress(self) -> StageProgress:
        """The progress report of the task's own last stage, "store"."""
        return _progress(self.stage_names, len(self.stage_names) - 1)


def builtin_analyzers(claims: Sequence[Claim]) -> list[Analyzer]:
    """The analyzers shipped with trustcard, in stage order."""
    return [ProvenanceAnalyzer(), DeepfakeSlot(), ClaimMatcher(claims)]


def run_pipeline(
    url: str,
    supplied: SuppliedContent | None,
    *,
    claims: Sequence[Claim],
    config: PipelineConfig,
    on_stage: Callable[[StageProgress], None] | None = None,
) -> PipelineResult:
    """Analyse one post; ExtractionError (or InvalidPostUrl) when its content cannot be had."""
    builtins = builtin_analyzers(claims)
    discovered = discover_analyzers(builtins, config.enabled, plugins=config.plugins)
    analyzers = [bind_claims(analyzer, claims) for analyzer in discovered]
    skipped = _disabled(builtins, config.enabled)
    names = [EXTRACT, *_analysis_stage_names(builtins, analyzers), TRUST_SCORE, STORE]
    report = on_stage or (lambda progress: None)
    parse_post_url(url)  # a bad URL fails before any progress is reported

    report(_progress(names, 0))
    clock = _Clock()
    extraction = _extract(url, supplied, config)
    stages = [clock.outcome(EXTRACT, "ok", None, _describe_extraction(extraction))]

    by_name = {analyzer.name: analyzer for analyzer in analyzers}
    signals = []
    for index, name in enumerate(names[1:-2], start=1):
        report(_progress(names, index))
        clock = _Clock()
        if name in skipped:
            stages.append(clock.outcome(name, "skipped", None, "switched off by ANALYZERS_ENABLED"))
            continue
        signal = run_analyzer(by_name[name], extraction.content, config.analyzer_timeout_seconds)
        signals.append(signal)
        stages.append(clock.outcome(name, signal.status, signal.as_dict(), signal.detail))

    report(_progress(names, len(names) - 2))
    clock = _Clock()
    trust = trust_score(signals, {a.name: analyzer_weight(a) for a in analyzers})
    stages.append(
        clock.outcome(TRUST_SCORE, "ok", trust.as_dict(), f"{trust.label} ({trust.score})")
    )
    return PipelineResult(_summary(extraction), stages, trust, names)


class _Clock:
    """When a stage started, in wall-clock time for the record and monotonic for its length."""

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()

    def outcome(
        self, name: str, status: StageStatus, signal: dict[str, Any] | None, detail: str
    ) -> StageOutcome:
        seconds = round(time.monotonic() - self._started, 3)
        return StageOutcome(
            name, status, signal, detail, self.started_at, datetime.now(UTC), seconds
        )


def _extract(url: str, supplied: SuppliedContent | None, config: PipelineConfig) -> Extraction:
    limits = config.fetch_limits()
    if supplied is not None:
        return extract_supplied(url, supplied, limits)
    return extract_fetched(url, config.post_base_url, limits)


def _disabled(builtins: Sequence[Analyzer], enabled: Set[str] | None) -> set[str]:
    return set() if enabled is None else {a.name for a in builtins if a.name not in enabled}


def _analysis_stage_names(builtins: Sequence[Analyzer], analyzers: Sequence[Analyzer]) -> list[str]:
    """Built-in stages always (skipped ones too), then enabled analyzers with new names."""
    builtin_names = [analyzer.name for analyzer in builtins]
    return builtin_names + [a.name for a in analyzers if a.name not in builtin_names]


def _progress(names: Sequence[str], index: int) -> StageProgress:
    return StageProgress(names[index], index, len(names), 100 * index // len(names))


def _describe_extraction(extraction: Extraction) -> str:
    content = extraction.content
    unfetched = sum(1 for item in content.media if item.data is None)
    media = f"{len(content.media)} media" + (f" ({unfetched} not fetched)" if unfetched else "")
    origin = (
        "supplied content" if extraction.source == "supplied" else f"fetched {extraction.page_url}"
    )
    return f"{origin}: caption {len(content.caption)} chars, {media}"


def _summary(extraction: Extraction) -> dict[str, Any]:
    content: PostContent = extraction.content
    return {
        "url": content.url,
        "shortcode": content.shortcode,
        "source": extraction.source,
        "page_url": extraction.page_url,
        "caption": content.caption,
        "hashtags": content.hashtags,
        "mentions": content.mentions,
        "posted_at": content.posted_at.isoformat() if content.posted_at else None,
        "media_count": len(content.media),
        "media": [
            {
                "source": item.url or "inline",
                "content_type": item.content_type,
                "bytes": len(item.data) if item.data is not None else None,
                "sha256": hashlib.sha256(item.data).hexdigest() if item.data is not None else None,
                "error": item.error,
            }
            for item in content.media
        ],
    }
