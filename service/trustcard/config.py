"""One Settings object for the API, the worker and the CLI, read from the environment."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated, Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_SCHEMES = ("redis", "rediss", "unix")

PositiveSeconds = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    """Every tunable of the service; the Helm chart sets these same names from its values."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    REDIS_URL: str = "redis://localhost:6379/0"
    RESULT_BACKEND_URL: str | None = None
    # Added (URL-encoded) to Redis URLs that carry none; on Kubernetes it comes from a Secret.
    REDIS_PASSWORD: SecretStr | None = None
    DATABASE_URL: str = "sqlite:///./trustcard.db"
    # How long the worker retries one database step of an analysis (a restart, a lock, a full
    # disk) before it ends the analysis `failed` with the reason.
    DATABASE_RETRY_SECONDS: Annotated[float, Field(ge=0, le=600)] = 30.0

    # TLS of rediss:// URLs (all Redis clients: redis_clients/connection.py): a CA bundle (unset:
    # the system's CAs), an optional client certificate and key for mutual TLS, and whether
    # to verify the server's certificate and host name (on unless you turn it off).
    REDIS_TLS_CA_FILE: str | None = None
    REDIS_TLS_CERT_FILE: str | None = None
    REDIS_TLS_KEY_FILE: str | None = None
    REDIS_TLS_VERIFY: bool = True

    TASK_TIME_LIMIT: PositiveSeconds = 300
    TASK_SOFT_TIME_LIMIT: PositiveSeconds = 240
    WORKER_PREFETCH_MULTIPLIER: Annotated[int, Field(ge=1)] = 1
    WORKER_MAX_TASKS_PER_CHILD: Annotated[int, Field(ge=0)] = 50
    WORKER_CONCURRENCY: Annotated[int, Field(ge=1)] | None = None
    # Redelivery delay for a task whose worker died without acking: must exceed the hard limit.
    BROKER_VISIBILITY_TIMEOUT: PositiveSeconds = 600
    RESULT_EXPIRES: PositiveSeconds = 86_400
    # Celery soft shutdown: on a cold shutdown (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT)
    # running tasks get this many seconds to finish, then are cancelled and requeued; 0 = off.
    WORKER_SOFT_SHUTDOWN_TIMEOUT: Annotated[float, Field(ge=0, le=3600)] = 0.0

    ENABLE_TEST_ENDPOINTS: bool = True

    # Liveness file the worker touches while connected to the broker (unset: no heartbeat).
    WORKER_HEARTBEAT_FILE: str | None = None
    WORKER_HEARTBEAT_INTERVAL_SECONDS: Annotated[float, Field(gt=0, le=300)] = 10.0

    # How long the API waits on Redis before answering 503, and on workers for GET /tasks/.
    REDIS_TIMEOUT_SECONDS: Annotated[float, Field(gt=0, le=30)] = 1.5
    INSPECT_TIMEOUT_SECONDS: Annotated[float, Field(gt=0, le=30)] = 1.0
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Client API keys, comma-separated (a mounted Secret on Kubernetes). Unset: no authentication.
    API_KEYS: SecretStr | None = None
    # Requests per second (and burst) per client key, or per address without keys; 0 turns it off.
    RATE_LIMIT_PER_SECOND: Annotated[float, Field(ge=0)] = 0
    RATE_LIMIT_BURST: Annotated[int, Field(ge=1)] = 50
    # Request size limits: bodies (413) and query strings (413).
    MAX_REQUEST_BODY_BYTES: Annotated[int, Field(ge=1024)] = 1_048_576
    MAX_QUERY_STRING_BYTES: Annotated[int, Field(ge=256)] = 8192

    # --- The edge (issue 15): proxies, shared rate limits, ownership, slow clients ---
    # Addresses/CIDRs of the reverse proxies (the Ingress controller) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed, comma-separated ("*": any peer). Empty: none is, and the
    # client is the TCP peer, whatever headers it sends.
    TRUSTED_PROXIES: str = ""
    # Keys that may read and cancel every client's tasks and analyses, and change the claims
    # table (comma-separated; a mounted Secret on Kubernetes). They are valid client keys too.
    ADMIN_API_KEYS: SecretStr | None = None
    # Failed authentications allowed per client address and minute before 429; 0 turns it off.
    AUTH_FAILURES_PER_MINUTE: Annotated[int, Field(ge=0)] = 30
    # A connection whose request headers are not complete in this time is closed (slowloris).
    HEADER_READ_TIMEOUT_SECONDS: Annotated[float, Field(gt=0, le=300)] = 10.0

    # `json`: one JSON object per line with trace_id/span_id (what log collectors parse).
    LOG_FORMAT: Literal["text", "json"] = "text"

    # The worker's own /metrics (task outcomes, runtimes, queue wait); 0 turns it off.
    WORKER_METRICS_PORT: Annotated[int, Field(ge=0, le=65535)] = 9808
    # Loopback for local runs; the chart sets 0.0.0.0 so Prometheus can scrape the pod.
    WORKER_METRICS_HOST: str = "127.0.0.1"

    # Analysis pipeline (trustcard.analysis): which analyzers run (comma list, empty: all) and
    # the time and size bounds of each step; tests point POST_FETCH_BASE_URL at a local server.
    ANALYZERS_ENABLED: str = ""
    ANALYZER_TIMEOUT_SECONDS: Annotated[float, Field(gt=0, le=600)] = 20.0
    POST_FETCH_TIMEOUT_SECONDS: Annotated[float, Field(gt=0, le=120)] = 10.0
    POST_FETCH_MAX_BYTES: Annotated[int, Field(ge=1024)] = 2 * 1024 * 1024
    MEDIA_FETCH_MAX_BYTES: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    POST_FETCH_BASE_URL: str = "https://www.instagram.com"
    FETCH_USER_AGENT: str = "TrustCard/0.1 (+https://github.com/trustcard; post analysis)"
    # PEM bundle of the C2PA trust anchors (root certificates) a manifest's signer must chain to
    # for its declarations to count; empty: no signer is trusted (manifests count for little).
    C2PA_TRUST_ANCHORS_FILE: str = ""
    # The claim_similarity plug-in (`embeddings` extra): torch threads per pool child (one child
    # per core is the usual concurrency), and where claim vectors are kept for the worker's
    # processes to share (empty: <system temp dir>/trustcard-claim-embeddings).
    CLAIM_SIMILARITY_TORCH_THREADS: Annotated[int, Field(ge=1, le=64)] = 1
    CLAIM_EMBEDDINGS_CACHE_DIR: str = ""

    # --- Redis eviction and the API's Redis connections (issue 14.4/14.5) ---
    # A Redis whose maxmemory-policy can evict keys (anything but noeviction) loses queued tasks
    # and records: `enforce` makes /health/ready 503; `warn` only logs and shows it.
    REDIS_EVICTION_POLICY_CHECK: Literal["enforce", "warn"] = "enforce"
    # Concurrent long-polls (GET /tasks/{id}?wait=) per API process (their own Redis pool) and
    # per client (key or address); above the first a wait answers at once, above the second 429.
    LONG_POLL_MAX: Annotated[int, Field(ge=1, le=10_000)] = 100
    LONG_POLL_PER_CLIENT: Annotated[int, Field(ge=1, le=10_000)] = 20
    # Submissions stop (503, broker full) above this share of the broker's maxmemory, keeping
    # room for workers to drain it (see api/broker_memory.py); 1 waits for Redis's own refusal.
    REDIS_MEMORY_HIGH_WATERMARK: Annotated[float, Field(gt=0, le=1)] = 0.9

    # --- Task events and Flower (issue 16, docs/flower.md) ---
    # Workers send task events (received, started, succeeded ...) and publishers task-sent
    # events: what Flower shows tasks from. Off by default: a Redis PUBLISH per task state.
    WORKER_SEND_TASK_EVENTS: bool = False
    # `trustcard flower`'s basic-auth credentials, user:password (comma-separated for several);
    # a mounted Secret on Kubernetes. Unset: Flower refuses to start unless told --no-auth.
    FLOWER_BASIC_AUTH: SecretStr | None = None

    # --- Redis Sentinel (issue 14.3; docs/redis-sentinel.md) ---
    # Comma-separated host:port of the Sentinels. Set: every Redis client asks them for the
    # master of REDIS_SENTINEL_MASTER_NAME; REDIS_URL and RESULT_BACKEND_URL then give only the
    # scheme (rediss:// = TLS to Sentinels and master), ACL user, password and database
    # (their host:port is ignored: write e.g. redis://sentinel/0).
    REDIS_SENTINEL_HOSTS: str = ""
    REDIS_SENTINEL_MASTER_NAME: Annotated[str, Field(min_length=1)] = "trustcard"
    # The Sentinels' own requirepass (a file in the secrets directory, like REDIS_PASSWORD).
    REDIS_SENTINEL_PASSWORD: SecretStr | None = None
    # After a submission's record + message the API sends `WAIT n timeout` on the same
    # connection and answers 503 (broker, outcome unknown) unless n replicas acknowledged:
    # a 202 then means "on n replicas too", not only on the master (asynchronous replication
    # loses what a failed or partitioned master had not sent on). 0: off.
    REDIS_WAIT_REPLICAS: Annotated[int, Field(ge=0, le=10)] = 0
    # How long WAIT waits for them; under the 5 s socket timeout of every Redis connection.
    REDIS_WAIT_TIMEOUT_MS: Annotated[int, Field(ge=1, le=4000)] = 500

    @field_validator("REDIS_URL", "RESULT_BACKEND_URL")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"must start with one of {', '.join(s + '://' for s in REDIS_SCHEMES)}"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("has no host")
        try:
            parts.port  # noqa: B018 - property raises on a malformed port
        except ValueError as exc:
            raise ValueError(f"has a malformed port ({exc})") from None
        if "ssl_" in parts.query:
            # One place for TLS options: a URL's ssl_cert_reqs would reach the backend only.
            raise ValueError("TLS options belong in the REDIS_TLS_* settings, not in the URL")
        # A unix:// URL's path is the socket (its database is a `?db=` query).
        db = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        if db and not db.isdigit():
            raise ValueError(f"database must be a number, got {db!r}")
        return value

    @field_validator("REDIS_SENTINEL_HOSTS")
    @classmethod
    def _sentinel_hosts(cls, value: str) -> str:
        parse_host_ports(value)
        return value

    @field_validator("POST_FETCH_BASE_URL")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL with a host, got {value!r}")
        return value.rstrip("/")

    @property
    def analyzers_enabled(self) -> frozenset[str] | None:
        """The analyzer names ANALYZERS_ENABLED lists; None (all) when it is empty or `all`."""
        names = frozenset(n.strip() for n in self.ANALYZERS_ENABLED.split(",") if n.strip())
        return None if not names or names == {"all"} else names

    @model_validator(mode="after")
    def _limits_consistent(self) -> Self:
        if self.TASK_SOFT_TIME_LIMIT >= self.TASK_TIME_LIMIT:
            raise ValueError(
                f"TASK_SOFT_TIME_LIMIT ({self.TASK_SOFT_TIME_LIMIT}) must be lower than "
                f"TASK_TIME_LIMIT ({self.TASK_TIME_LIMIT})"
            )
        if self.BROKER_VISIBILITY_TIMEOUT <= self.TASK_TIME_LIMIT:
            raise ValueError(
                f"BROKER_VISIBILITY_TIMEOUT ({self.BROKER_VISIBILITY_TIMEOUT}) must exceed "
                f"TASK_TIME_LIMIT ({self.TASK_TIME_LIMIT}), or long tasks run twice"
            )
        return self

    @model_validator(mode="after")
    def _sentinel_urls(self) -> Self:
        if not self.sentinel_hosts:
            return self
        for name in ("REDIS_URL", "RESULT_BACKEND_URL"):
            url = getattr(self, name)
            if url is not None and urlsplit(url).scheme == "unix":
                raise ValueError(
                    f"{name}: a unix:// socket cannot go with REDIS_SENTINEL_HOSTS "
                    "(use redis:// or rediss://, e.g. redis://sentinel/0)"
                )
        return self

    @property
    def sentinel_hosts(self) -> tuple[tuple[str, int], ...]:
        """The Sentinels' (host, port); empty when REDIS_SENTINEL_HOSTS is unset (no Sentinel)."""
        return parse_host_ports(self.REDIS_SENTINEL_HOSTS)

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The configured keys (blank entries ignored); empty means authentication is off."""
        if self.API_KEYS is None:
            return ()
        return tuple(k.strip() for k in self.API_KEYS.get_secret_value().split(",") if k.strip())

    @property
    def admin_api_keys(self) -> tuple[str, ...]:
        """The admin keys (blank entries ignored)."""
        if self.ADMIN_API_KEYS is None:
            return ()
        value = self.ADMIN_API_KEYS.get_secret_value()
        return tuple(k.strip() for k in value.split(",") if k.strip())

    @property
    def broker_url(self) -> str:
        """REDIS_URL, with REDIS_PASSWORD added when the URL has none."""
        return self._with_password(self.REDIS_URL)

    @property
    def result_backend_url(self) -> str:
        """The result backend: RESULT_BACKEND_URL, else the broker's server on database 1."""
        if self.RESULT_BACKEND_URL:
            return self._with_password(self.RESULT_BACKEND_URL)
        parts = urlsplit(self.broker_url)
        if parts.scheme == "unix":
            return f"{self.broker_url.split('?', 1)[0]}?db=1"
        return urlunsplit(parts._replace(path="/1"))

    def _with_password(self, url: str) -> str:
        parts = urlsplit(url)
        if self.REDIS_PASSWORD is None or parts.password is not None or parts.scheme == "unix":
            return url
        secret = quote(self.REDIS_PASSWORD.get_secret_value(), safe="")
        # An ACL user name in the URL (rediss://user@host) stays as written, before the password.
        user, _, host = parts.netloc.rpartition("@")
        netloc = f"{user}:{secret}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))


def parse_host_ports(value: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (IPv6 as [addr]:port) as pairs; ValueError naming a bad entry."""
    pairs = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            parts = urlsplit(f"//{entry}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if not host or port is None or port == 0 or parts.path or parts.username:
            raise ValueError(f"{entry!r} is not host:port (e.g. sentinel-0.sentinel:26379)")
        pairs.append((host, port))
    return tuple(pairs)


class ConfigError(Exception):
    """Configuration that cannot start the service; the message is one readable line."""


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's multi-line report into one line naming each bad variable."""
    problems = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "configuration"
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if item["loc"] else message)
    return "invalid configuration: " + "; ".join(problems)


# A directory of files named like the settings (a mounted Kubernetes Secret), read after the
# environment: keeps passwords and URLs with credentials out of environment variables.
SECRETS_DIR_ENV = "TRUSTCARD_SECRETS_DIR"


def load_settings() -> Settings:
    """Read the environment (and TRUSTCARD_SECRETS_DIR); raise ConfigError on bad values."""
    secrets_dir = os.environ.get(SECRETS_DIR_ENV) or None
    try:
        return Settings(_secrets_dir=secrets_dir)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def redact_url(url: str) -> str:
    """Hide the password of a connection URL before it reaches a log or a response."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
