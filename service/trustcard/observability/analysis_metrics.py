"""Analysis metrics: extraction outcomes by cause, analyzer statuses, trust labels, stage times.

Analyses run in prefork pool children, but the worker's metrics live in its main process (see
worker_metrics: no prometheus multiprocess mode). So a child sends each analysis's outcome,
one small datagram, to the main process over a socket pair made before the pool forks (as
span_relay does for spans); a thread there counts it. Nothing waits in a child: a full socket
drops the observation (logged). A worker without forked children (solo or threads pool)
counts in place.

Every label value comes from a fixed set (fetch causes, statuses, labels) or from the installed
analyzers' names, never from a request.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import threading
from dataclasses import dataclass
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Histogram

from trustcard.analysis.deepfake import DEEPFAKE
from trustcard.analysis.factcheck import FACT_CHECK
from trustcard.analysis.fetch import FETCH_CAUSES
from trustcard.analysis.pipeline import EXTRACT, STORE, TRUST_SCORE, PipelineResult
from trustcard.analysis.provenance import AI_GENERATED
from trustcard.analysis.score import TrustLabel

log = logging.getLogger(__name__)

SOURCES = ("fetched", "supplied")
OUTCOMES = ("ok", *FETCH_CAUSES, "invalid_url")
ANALYZER_STATUSES = ("ok", "unavailable", "timeout", "error")
# The pipeline's stage status "failed" (the analyzer raised) is the metric's "error".
_STATUS_LABEL = {"ok": "ok", "unavailable": "unavailable", "timeout": "timeout", "failed": "error"}
BUILTIN_ANALYZERS = (AI_GENERATED, DEEPFAKE, FACT_CHECK)
BUILTIN_STAGES = (EXTRACT, *BUILTIN_ANALYZERS, TRUST_SCORE, STORE)
# Stages take milliseconds (score) to tens of seconds (a slow site, ANALYZER_TIMEOUT_SECONDS).
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
MAX_DATAGRAM_BYTES = 64 << 10


@dataclass(frozen=True)
class AnalysisObservation:
    """What one analysis did, as plain values (it crosses a socket)."""

    source: str  # "fetched" | "supplied"
    outcome: str  # "ok" or the FetchCause (or "invalid_url") it failed with
    stages: tuple[tuple[str, str, float], ...] = ()  # (stage, pipeline status, seconds)
    trust_label: str | None = None


def observe_result(source: str, result: PipelineResult, store_seconds: float) -> None:
    """A completed analysis: extraction ok, each stage's status and time, its trust label."""
    stages = tuple((s.name, s.status, s.seconds) for s in result.stages)
    record(
        AnalysisObservation(
            source, "ok", (*stages, (STORE, "ok", store_seconds)), result.trust.label
        )
    )


def observe_failure(source: str, outcome: str, extract_seconds: float) -> None:
    """An analysis whose content could not be had: no analyzer ran."""
    record(AnalysisObservation(source, outcome, ((EXTRACT, "failed", extract_seconds),)))


class AnalysisMetrics:
    """The metric families, on the worker's registry, and how an observation moves them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.extractions = Counter(
            "trustcard_analysis_extractions",
            "Post content extractions by source (fetched page or supplied) and outcome "
            "(ok, or why the page could not be had: login_wall, rate_limited, timeout, ...)",
            ["source", "outcome"],
            registry=registry,
        )
        self.analyzer_results = Counter(
            "trustcard_analysis_analyzer_results",
            "Analyzer results by analyzer and status (ok, unavailable, timeout, error)",
            ["analyzer", "status"],
            registry=registry,
        )
        self.trust_labels = Counter(
            "trustcard_analysis_trust_labels",
            "Trust labels given to completed analyses",
            ["label"],
            registry=registry,
        )
        self.stage_duration = Histogram(
            "trustcard_analysis_stage_duration_seconds",
            "Time one pipeline stage took (extract, each analyzer, trust_score, store)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        # Every fixed series starts at 0, so rate() and the alert see the first event.
        for source in SOURCES:
            for outcome in OUTCOMES:
                self.extractions.labels(source, outcome)
        for analyzer in BUILTIN_ANALYZERS:
            for status in ANALYZER_STATUSES:
                self.analyzer_results.labels(analyzer, status)
        for label in get_args(TrustLabel):
            self.trust_labels.labels(label)
        for stage in BUILTIN_STAGES:
            self.stage_duration.labels(stage)

    def count(self, observation: AnalysisObservation) -> None:
        self.extractions.labels(observation.source, observation.outcome).inc()
        for stage, status, seconds in observation.stages:
            self.stage_duration.labels(stage).observe(seconds)
            if stage in (EXTRACT, TRUST_SCORE, STORE) or status not in _STATUS_LABEL:
                continue  # not an analyzer, or one switched off ("skipped")
            self.analyzer_results.labels(stage, _STATUS_LABEL[status]).inc()
        if observation.trust_label is not None:
            self.trust_labels.labels(observation.trust_label).inc()


class ObservationRelay:
    """Main process: receives the pool children's observations and counts them."""

    def __init__(self, metrics: AnalysisMetrics) -> None:
        self.metrics = metrics
        self._receiver, self._sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._pid = os.getpid()
        self.dropped = 0
        threading.Thread(target=self._run, name="analysis-metrics", daemon=True).start()

    def send(self, observation: AnalysisObservation) -> None:
        if os.getpid() == self._pid:
            self.metrics.count(observation)  # no fork between us: count in place
            return
        try:
            # MSG_DONTWAIT: an analysis never waits for the main process.
            self._sender.send(pickle.dumps(observation), socket.MSG_DONTWAIT)
        except OSError as error:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("analysis metrics dropped (%d so far): %s", self.dropped, error)

    def _run(self) -> None:
        while True:
            data = self._receiver.recv(MAX_DATAGRAM_BYTES)
            try:
                # Only processes forked from this one hold the unnamed socket's sending end.
                observation = pickle.loads(data)  # noqa: S301
                self.metrics.count(observation)
            except Exception:  # a bad datagram must not end the relay
                log.exception("undecodable analysis observation from a pool child")


_metrics: AnalysisMetrics | None = None
_relay: ObservationRelay | None = None


def start_analysis_metrics(registry: CollectorRegistry) -> None:
    """In the worker's main process, before the pool forks (worker_init)."""
    global _metrics, _relay
    if _relay is None:
        _metrics = AnalysisMetrics(registry)
        _relay = ObservationRelay(_metrics)


def record(observation: AnalysisObservation) -> None:
    """Count one analysis in the worker's metrics; nothing outside a worker (tests, scripts)."""
    if _relay is not None:
        _relay.send(observation)
