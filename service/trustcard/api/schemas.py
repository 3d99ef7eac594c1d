"""Response bodies; shapes follow the seed guide and may add fields."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from trustcard.analysis.claims import Verdict
from trustcard.analysis.content import parse_post_url
from trustcard.analysis.supplied import (
    MAX_MEDIA_ITEMS,
    MAX_MEDIA_URL_CHARS,
    SuppliedContent,
    SuppliedMedia,
)
from trustcard.task_model.status import TaskStatus

# The URL forms parse_post_url accepts, for the OpenAPI document (clients, fuzzers).
POST_URL_PATTERN = (
    r"^https?://(www\.|m\.)?instagram\.com/([A-Za-z0-9._]{1,30}/)?(p|reel|reels|tv)/"
    r"[A-Za-z0-9_-]{5,64}/?([?#][^\s]*)?$"
)
# Documented forms of what the validators accept (the validators give the readable errors).
HTTP_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(/[^\s]*)?$"
BASE64_PATTERN = r"^([A-Za-z0-9+/]{4})*$"
CONTENT_TYPE_PATTERN = r"^([a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*)?$"
# A claim needs a letter or digit to be matched at all.
CLAIM_TEXT_PATTERN = r"[^\W_]"
MAX_CLAIM_CHARS = 2000
MAX_CLAIM_SOURCES = 20

# OpenAPI `responses=` mapping of extra status codes per route.
Responses = dict[int | str, dict[str, Any]]


class TaskSubmitted(BaseModel):
    task_id: str
    status: str = Field("submitted", examples=["submitted"])
    message: str
    task_name: str
    status_url: str
    trace_id: str | None = Field(
        None, description="OpenTelemetry trace of this submission (null when tracing is off)"
    )


class TaskProgress(BaseModel):
    stage: str
    stage_index: int
    total_stages: int
    percent: int
    started_at: str | None = Field(None, description="ISO-8601 UTC")


class TaskState(BaseModel):
    task_id: str
    status: TaskStatus
    result: Any = None
    error: str | None = None
    task_name: str
    progress: dict[str, Any] | None = Field(
        None, description="While processing: stage, stage_index, total_stages, percent"
    )
    submitted_at: str | None = None
    finished_at: str | None = None
    cancelled_at: str | None = None
    trace_id: str | None = Field(
        None, description="Trace of the submission, publish and run (null when tracing is off)"
    )


class ActiveTasks(BaseModel):
    active_tasks: dict[str, list[dict[str, Any]]]
    count: int


class TaskCancelled(BaseModel):
    task_id: str
    cancelled: bool
    message: str


class DependencyHealth(BaseModel):
    ok: bool
    url: str
    latency_ms: float | None = None
    error: str | None = None
    # Redis only: the server's maxmemory-policy (`unknown` when unreadable), and a problem
    # accepted by REDIS_EVICTION_POLICY_CHECK=warn (ok stays true).
    maxmemory_policy: str | None = None
    warning: str | None = None


class Health(BaseModel):
    status: str = Field(examples=["ok", "degraded"])
    version: str
    dependencies: dict[str, DependencyHealth]


class DependencyOk(BaseModel):
    ok: bool


class HealthSummary(BaseModel):
    """The public health answer: no URLs, paths, versions or error texts (see /health/detail)."""

    status: str = Field(examples=["ok", "degraded"])
    dependencies: dict[str, DependencyOk]


class ErrorBody(BaseModel):
    detail: Any


# --- Post analyses and claims (POST/GET /analysis/posts, /claims) ---


class MediaIn(SuppliedMedia):
    """SuppliedMedia as the OpenAPI document describes it: exactly one of url and data_base64."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"oneOf": [{"required": ["url"]}, {"required": ["data_base64"]}]},
    )

    url: Annotated[
        str | None,
        WithJsonSchema({"type": "string", "maxLength": 2048, "pattern": HTTP_URL_PATTERN}),
    ] = Field(default=None, max_length=MAX_MEDIA_URL_CHARS)
    data_base64: Annotated[
        str | None,
        WithJsonSchema(
            {"type": "string", "pattern": BASE64_PATTERN, "description": "Standard base64"}
        ),
    ] = None
    content_type: Annotated[
        str, WithJsonSchema({"type": "string", "pattern": CONTENT_TYPE_PATTERN})
    ] = Field(default="", max_length=100)


class ContentIn(SuppliedContent):
    """SuppliedContent with its media described precisely (same validation)."""

    media: list[MediaIn] = Field(default_factory=list, max_length=MAX_MEDIA_ITEMS)  # type: ignore[assignment]  # narrower items, same list


def nul_path(value: Any, path: str = "") -> str | None:
    """Where the first NUL character sits in a JSON value (`content.caption`), or None.

    PostgreSQL refuses NUL in text and JSON; caught here it is a 422 naming the field, not a
    database error reported as an outage (503).
    """
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return f"{path}.<key>" if path else "<key>"
        found = nul_path(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


class RefusesNul(BaseModel):
    """A request body in which no string may hold a NUL character."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = nul_path(data)
        if where is not None:
            raise ValueError(f"{where} contains a NUL character (\\u0000), which cannot be stored")
        return data


class AnalysisRequest(RefusesNul):
    """A post to analyse, and optionally its content so the worker need not fetch the page."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2048,
        description="An Instagram post or reel URL (instagram.com/p/<shortcode>/, /reel/...)",
        examples=["https://www.instagram.com/p/C0dE1234567/"],
        # Documented only: the validator below checks, with a message saying what is wrong.
        json_schema_extra={"pattern": POST_URL_PATTERN},
    )
    content: ContentIn | None = Field(
        None, description="Caption, tags and media the client already has (size-limited)"
    )
    force: bool = Field(
        False, description="Start a new analysis even while one of the same post is running"
    )

    @field_validator("url")
    @classmethod
    def _post_url(cls, value: str) -> str:
        parse_post_url(value)  # InvalidPostUrl is a ValueError: a 422 naming what is wrong
        return value.strip()

    @property
    def shortcode(self) -> str:
        return parse_post_url(self.url)


class AnalysisSubmitted(BaseModel):
    analysis_id: str
    task_id: str
    status: str = Field(
        "submitted",
        description="`submitted` for a new analysis; the running one's status when deduplicated",
    )
    message: str
    status_url: str = Field(description="GET it for the stored analysis")
    task_status_url: str = Field(description="GET it for the Celery task (progress, outcome)")
    deduplicated: bool = Field(
        False, description="True when an analysis of the same post was already running"
    )
    trace_id: str | None = None


class StageResultOut(BaseModel):
    name: str
    status: str = Field(examples=["ok", "failed", "timeout", "unavailable", "skipped"])
    signal: dict[str, Any] | None = None
    detail: str | None = None
    seconds: float | None = None


class TrustOut(BaseModel):
    score: float | None = Field(description="0 (untrustworthy) .. 100, null without signals")
    label: str | None
    confidence: float | None = Field(None, description="0..1: share of the signals available")
    explanation: list[str] = Field(default_factory=list)
    missing_signals: list[str] = Field(default_factory=list)


class AnalysisSummary(BaseModel):
    analysis_id: str
    url: str
    shortcode: str
    status: str = Field(examples=["pending", "processing", "completed", "failed"])
    stage: str | None = Field(None, description="The stage running now (or the last one)")
    percent: int
    trust_score: float | None = None
    trust_label: str | None = None
    error: str | None = Field(None, description="Why the analysis failed")
    task_id: str | None = None
    trace_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class AnalysisOut(AnalysisSummary):
    trust: TrustOut | None = None
    content: dict[str, Any] | None = Field(
        None, description="What was analysed: caption, hashtags, mentions, media, source"
    )
    stages: list[StageResultOut] = Field(default_factory=list)


class AnalysisPage(BaseModel):
    items: list[AnalysisSummary]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page")


class ClaimIn(RefusesNul):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1,
        max_length=MAX_CLAIM_CHARS,
        json_schema_extra={"pattern": CLAIM_TEXT_PATTERN},
        description="The claim as fact-checkers state it; matched against captions",
    )
    verdict: Verdict
    sources: list[
        Annotated[str, Field(max_length=2048, json_schema_extra={"pattern": HTTP_URL_PATTERN})]
    ] = Field(default_factory=list, max_length=MAX_CLAIM_SOURCES)

    @field_validator("text")
    @classmethod
    def _has_words(cls, value: str) -> str:
        if not re.search(CLAIM_TEXT_PATTERN, value):
            raise ValueError("claim text has no letters or digits to match")
        return value.strip()

    @field_validator("sources")
    @classmethod
    def _http_urls(cls, values: list[str]) -> list[str]:
        for value in values:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"source {value[:100]!r} is not an http(s) URL")
        return values


class ClaimOut(BaseModel):
    id: int
    text: str
    verdict: str
    sources: list[str]
    created_at: datetime


class ClaimPage(BaseModel):
    items: list[ClaimOut]
    next_after_id: int | None = Field(None, description="Pass as `after_id` for the next page")
