"""Prometheus metrics of the API process, served on its /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import Scope

# Latency buckets in seconds: the API answers in milliseconds; the tail matters up to seconds.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "trustcard_http_requests_total",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "trustcard_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
TASKS_SUBMITTED = Counter(
    "trustcard_tasks_submitted_total",
    "Tasks accepted by the API and published to the broker, by task name",
    ["task_name"],
)
PUBLISH_LATENCY = Histogram(
    "trustcard_broker_publish_duration_seconds",
    "Time to publish one task message to the broker",
    buckets=LATENCY_BUCKETS,
)
REDIS_MASTER_SWITCHES = Counter(
    "trustcard_redis_master_switches_total",
    "Redis master switches (Sentinel +switch-master) this process followed",
)
SUBMISSION_ERRORS = Counter(
    "trustcard_submission_errors_total",
    "Submissions refused because a dependency failed, by cause",
    ["cause"],
)

# Every cause starts at 0, so rate() and alerts see the first error and the series always exist.
for _dependency in ("broker", "result_backend"):
    for _kind in ("unavailable", "timeout"):
        SUBMISSION_ERRORS.labels(f"{_dependency}_{_kind}")

UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The matched route's path template (low cardinality), never the raw path.

    Starlette's router stores the route it matched (fully, or by path only for a 405) in the
    shared scope; a request no route matched keeps one label.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED_ROUTE


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    """Count and time one answered HTTP request by its route template (api/request_guard)."""
    route = route_template(scope)
    method: str = scope["method"]
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_LATENCY.labels(route, method).observe(seconds)


def record_submission_error(dependency: str, timed_out: bool) -> None:
    cause = f"{dependency.replace(' ', '_')}_{'timeout' if timed_out else 'unavailable'}"
    SUBMISSION_ERRORS.labels(cause).inc()


def observe_publish(task_name: str, seconds: float) -> None:
    PUBLISH_LATENCY.observe(seconds)
    TASKS_SUBMITTED.labels(task_name).inc()


# --- Redis eviction policy (issue 14.4): 0 while a server may evict our keys ---
REDIS_EVICTION_POLICY_SAFE = Gauge(
    "trustcard_redis_eviction_policy_safe",
    "1 when the Redis server's maxmemory-policy (label policy; `unknown` when unreadable) "
    "cannot evict queued tasks or records (noeviction), else 0; by dependency",
    ["dependency", "policy"],
)
_policies_shown: dict[str, str] = {}


def show_eviction_policy(dependency: str, policy: str, safe: bool) -> None:
    """One series per dependency: the one of its current policy."""
    previous = _policies_shown.get(dependency)
    if previous is not None and previous != policy:
        REDIS_EVICTION_POLICY_SAFE.remove(dependency, previous)
    _policies_shown[dependency] = policy
    REDIS_EVICTION_POLICY_SAFE.labels(dependency, policy).set(1 if safe else 0)
