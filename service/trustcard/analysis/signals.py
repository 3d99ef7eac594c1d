"""The analyzer interface, plug-in discovery, and running one analyzer so it cannot stop the rest.

A plug-in is any installed distribution declaring an entry point in the `trustcard.analyzers`
group that names an Analyzer class (instantiated without arguments), a factory function, or an
instance. A plug-in with a built-in's name replaces that built-in (e.g. a real "deepfake" model
replaces the empty deepfake slot); one with a new name becomes a stage of its own, run after
the built-ins. An analyzer may set a `weight` attribute (default 1.0) for the trust score.
A plug-in class that sets `opt_in = True` (e.g. one that loads a model) runs only when
ANALYZERS_ENABLED names it, not when it is empty ("all"). One with a `for_claims(claims)`
method is given each run's claims table through it (bind_claims).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence, Set
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, Protocol, runtime_checkable

from trustcard.analysis.claims import Claim
from trustcard.analysis.content import PostContent

log = logging.getLogger(__name__)

ANALYZER_ENTRY_POINT_GROUP = "trustcard.analyzers"

SignalStatus = Literal["ok", "failed", "timeout", "unavailable"]
MAX_DETAIL_CHARS = 500


@dataclass(frozen=True)
class Signal:
    """One analyzer's finding.

    `score` is the likelihood of the problem the analyzer looks for (1 = certainly there), set
    exactly when status is "ok"; `confidence` says how much that score is worth (0..1).
    """

    name: str
    score: float | None
    confidence: float
    evidence: list[str] = field(default_factory=list)
    status: SignalStatus = "ok"
    # Structured evidence (JSON-safe), e.g. the matched claim and its similarity.
    data: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    version: str = ""
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.status == "ok") != (self.score is not None):
            raise ValueError(f"signal {self.name!r}: score must be set exactly when status is ok")
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise ValueError(f"signal {self.name!r}: score {self.score} is outside 0..1")
        if not 0.0 <= self.confidence <= 1.0 or math.isnan(self.confidence):
            raise ValueError(f"signal {self.name!r}: confidence {self.confidence} is outside 0..1")

    @classmethod
    def unavailable(cls, name: str, detail: str) -> Signal:
        return cls(name=name, score=None, confidence=0.0, status="unavailable", detail=detail)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Analyzer(Protocol):
    """Looks at a post for one kind of problem; must be safe to call from a worker thread."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def analyze(self, content: PostContent) -> Signal: ...


@dataclass(frozen=True)
class BrokenPlugin:
    """Stands in for a plug-in that did not load, so results show the failure, not hide it."""

    name: str
    error: str
    version: str = "unloaded"

    def analyze(self, content: PostContent) -> Signal:
        return Signal(
            name=self.name,
            score=None,
            confidence=0.0,
            status="failed",
            detail=f"plug-in failed to load: {self.error}"[:MAX_DETAIL_CHARS],
        )


def discover_analyzers(
    builtins: Sequence[Analyzer],
    enabled: Set[str] | None = None,
    *,
    plugins: Iterable[EntryPoint] | None = None,
) -> list[Analyzer]:
    """Built-ins, then new plug-ins, keeping only `enabled` names (None: all), in that order.

    A plug-in with a built-in's name takes the built-in's place. An enabled name nobody provides
    comes back as a BrokenPlugin, so every result shows the misconfiguration. `plugins` defaults
    to the installed entry points of ANALYZER_ENTRY_POINT_GROUP.
    """
    found: dict[str, Analyzer] = {analyzer.name: analyzer for analyzer in builtins}
    if plugins is None:
        plugins = entry_points(group=ANALYZER_ENTRY_POINT_GROUP)
    for entry_point in sorted(plugins, key=lambda ep: ep.name):
        if enabled is not None and entry_point.name not in enabled:
            continue  # not loading it keeps a disabled plug-in's import errors out of the way
        if enabled is None and _opt_in(entry_point):
            continue
        if entry_point.name in found:
            log.info("analyzer plug-in %r replaces the built-in", entry_point.name)
        found[entry_point.name] = load_plugin(entry_point)
    if enabled is None:
        return list(found.values())
    for name in sorted(enabled - found.keys()):
        available = ", ".join(sorted(found)) or "none"
        found[name] = BrokenPlugin(name, f"no such analyzer is installed (available: {available})")
    return [analyzer for name, analyzer in found.items() if name in enabled]


def _opt_in(entry_point: EntryPoint) -> bool:
    """Whether the class an entry point names says it runs only when enabled by name."""
    try:
        target = entry_point.load()
    except Exception:
        return False  # load_plugin reports the failure as a BrokenPlugin
    return getattr(target, "opt_in", False) is True


def bind_claims(analyzer: Analyzer, claims: Sequence[Claim]) -> Analyzer:
    """The analyzer for one run: one with `for_claims` gets the run's claims table."""
    for_claims = getattr(analyzer, "for_claims", None)
    if not callable(for_claims):
        return analyzer
    try:
        bound = for_claims(claims)
        if not isinstance(bound, Analyzer):
            raise TypeError(f"for_claims() returned {type(bound).__name__}, not an analyzer")
    except Exception as exc:  # one plug-in's fault is its own stage's failure
        log.exception("analyzer %r could not take the claims table", analyzer.name)
        return BrokenPlugin(name=analyzer.name, error=f"{type(exc).__name__}: {exc}")
    return bound


# Loaded plug-ins, kept for the life of the process: a model loads once per worker process,
# not once per analysis. Failures are not kept, so a fixed installation is picked up.
_loaded: dict[tuple[str, str], Analyzer] = {}
_loading = threading.Lock()


def load_plugin(entry_point: EntryPoint) -> Analyzer:
    """The analyzer an entry point names, or a BrokenPlugin saying why it could not be loaded."""
    key = (entry_point.name, entry_point.value)
    with _loading:
        if key not in _loaded:
            analyzer = _load(entry_point)
            if isinstance(analyzer, BrokenPlugin):
                return analyzer
            _loaded[key] = analyzer
        return _loaded[key]


def _load(entry_point: EntryPoint) -> Analyzer:
    try:
        target = entry_point.load()
        # Check classes first: a class with the right attributes also passes isinstance(Analyzer).
        if isinstance(target, type) or not isinstance(target, Analyzer):
            target = target()
        if not isinstance(target, Analyzer):
            raise TypeError(f"{entry_point.value} does not provide name, version and analyze()")
    except Exception as exc:
        log.exception(
            "analyzer plug-in %r (%s) failed to load", entry_point.name, entry_point.value
        )
        return BrokenPlugin(name=entry_point.name, error=f"{type(exc).__name__}: {exc}")
    if target.name != entry_point.name:
        # Configuration enables analyzers and results report them by one name: they must agree.
        error = f"entry point {entry_point.name!r} provides an analyzer named {target.name!r}"
        log.error("analyzer plug-in rejected: %s", error)
        return BrokenPlugin(name=entry_point.name, error=error)
    return target


def run_analyzer(analyzer: Analyzer, content: PostContent, timeout: float) -> Signal:
    """Run one analyzer in its own thread; a raise is a "failed" signal, overtime a "timeout".

    Python cannot stop a thread: a timed-out analyzer keeps running in its daemon thread until
    it returns (the worker's hard time limit ends it for good), but the pipeline goes on.
    """
    run = _AnalyzerRun(analyzer, content)
    run.start()
    return run.result(timeout)


def analyzer_weight(analyzer: Analyzer) -> float:
    """How much an analyzer's signal counts in the trust score (its `weight`, default 1)."""
    weight = getattr(analyzer, "weight", 1.0)
    return float(weight) if isinstance(weight, int | float) and weight > 0 else 1.0


class _AnalyzerRun:
    def __init__(self, analyzer: Analyzer, content: PostContent) -> None:
        self.analyzer = analyzer
        self.name = analyzer.name
        self.version = analyzer.version
        self._content = content
        self._outcome: Signal | BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"analyzer-{self.name}", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = self.analyzer.analyze(self._content)
        except BaseException as exc:  # recorded as the analyzer's failure
            self._outcome = exc

    def result(self, timeout: float) -> Signal:
        self._thread.join(max(0.0, self._started + timeout - time.monotonic()))
        seconds = round(time.monotonic() - self._started, 3)
        if self._thread.is_alive():
            log.warning("analyzer %r timed out after %.1f s", self.name, timeout)
            return self._signal("timeout", f"no result within {timeout:g} s", seconds)
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            log.error("analyzer %r failed", self.name, exc_info=outcome)
            return self._signal("failed", f"{type(outcome).__name__}: {outcome}", seconds)
        if not isinstance(outcome, Signal):
            return self._signal(
                "failed", f"returned {type(outcome).__name__}, not a Signal", seconds
            )
        try:
            json.dumps({"evidence": outcome.evidence, "data": outcome.data}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            # Results are stored as JSON: a plug-in's odd value must not fail the whole analysis.
            return self._signal("failed", f"signal is not JSON-serialisable ({exc})", seconds)
        # The analyzer's registered name wins, so results line up with configuration.
        return replace(outcome, name=self.name, version=self.version, seconds=seconds)

    def _signal(self, status: SignalStatus, detail: str, seconds: float) -> Signal:
        return Signal(
            name=self.name,
            score=None,
            confidence=0.0,
            status=status,
            detail=detail[:MAX_DETAIL_CHARS],
            version=self.version,
            seconds=seconds,
        )
