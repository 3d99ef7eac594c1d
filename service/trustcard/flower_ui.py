"""`trustcard flower`: Flower (the Celery monitor) on our Celery app, authenticated by default.

Flower runs in this process on `trustcard.celery_app`, so it reaches Redis exactly as the
worker does: the same URL, password (TRUSTCARD_SECRETS_DIR) and REDIS_TLS_* options.
Credentials reach Flower through its documented FLOWER_BASIC_AUTH variable, set here from
Settings (a mounted Secret file on Kubernetes), never on the command line (`ps` shows that).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from trustcard.config import ConfigError, Settings

logger = logging.getLogger(__name__)

# Flower's own variables (flower/command.py reads FLOWER_<option>; views read the second).
BASIC_AUTH_ENV = "FLOWER_BASIC_AUTH"
UNAUTHENTICATED_API_ENV = "FLOWER_UNAUTHENTICATED_API"


@dataclass(frozen=True)
class FlowerOptions:
    """What `trustcard flower` tells Flower (the chart renders the same options)."""

    address: str = "127.0.0.1"
    port: int = 5555
    # Path prefix when served under an Ingress path, e.g. `flower` for https://host/flower/.
    url_prefix: str = ""
    # Flower's state file (tasks seen so far) kept across restarts; empty: memory only.
    state_file: str = ""
    # Tasks kept in memory (Flower's default is 100,000; each costs ~1-2 KiB).
    max_tasks: int = 10_000
    # Refuse worker/task control (shutdown, pool resize, revoke) from Flower's UI and API.
    read_only: bool = True
    # No authentication: only for a Flower reached solely through an authenticating proxy.
    no_auth: bool = False


def flower_args(options: FlowerOptions) -> list[str]:
    """Flower's command-line options (tornado's `--name=value` form)."""
    args = [
        f"--address={options.address}",
        f"--port={options.port}",
        # Workers send events iff WORKER_SEND_TASK_EVENTS: Flower's default broadcasts
        # enable_events every 5 s, which would switch them on behind the operator's back.
        "--enable_events=False",
        f"--max_tasks={options.max_tasks}",
        f"--read_only={options.read_only}",
        # Our log handler (text or JSON) formats Flower's lines; tornado adds none of its own.
        "--logging=none",
    ]
    if options.url_prefix:
        args.append(f"--url_prefix={options.url_prefix.strip('/')}")
    if options.state_file:
        # Saved every minute and at shutdown; without an interval only at shutdown.
        args += ["--persistent=True", f"--db={options.state_file}", "--state_save_interval=60000"]
    return args


def flower_auth_env(settings: Settings, no_auth: bool) -> dict[str, str]:
    """The variables that make Flower require basic auth, or (no_auth) open its API."""
    secret = settings.FLOWER_BASIC_AUTH
    if secret is not None and no_auth:
        raise ConfigError("FLOWER_BASIC_AUTH is set and --no-auth was given: choose one")
    if secret is None:
        if no_auth:
            # Flower answers its /api/* with 401 unless this says no authentication is meant.
            return {UNAUTHENTICATED_API_ENV: "true"}
        raise ConfigError(
            "FLOWER_BASIC_AUTH is not set (user:password): Flower shows every task's "
            "arguments; pass --no-auth only when an authenticating proxy is its sole way in"
        )
    credentials = [c.strip() for c in secret.get_secret_value().split(",") if c.strip()]
    for credential in credentials:
        user, _, password = credential.partition(":")
        if not user or not password:
            raise ConfigError("FLOWER_BASIC_AUTH must be user:password (comma-separated pairs)")
    if not credentials:
        raise ConfigError("FLOWER_BASIC_AUTH is empty: give user:password")
    return {BASIC_AUTH_ENV: ",".join(credentials)}


def run_flower(settings: Settings, options: FlowerOptions, extra: list[str]) -> int:
    """Serve Flower until SIGTERM; returns its exit status."""
    env = flower_auth_env(settings, options.no_auth)
    # Set in this process only: /proc/<pid>/environ shows the environment we started with.
    for name in (BASIC_AUTH_ENV, UNAUTHENTICATED_API_ENV):
        os.environ.pop(name, None)
    os.environ.update(env)
    if not settings.WORKER_SEND_TASK_EVENTS:
        logger.warning("WORKER_SEND_TASK_EVENTS is off: Flower lists workers but no tasks")
    from trustcard.celery_app import celery_app

    status = celery_app.start(["flower", *flower_args(options), *extra])
    return int(status or 0)
