"""`trustcard api | worker | dev`: run the TrustCard API, a Celery worker, or all of it locally."""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

from trustcard.config import ConfigError, Settings, get_settings, redact_url
from trustcard.db.cli import claims_cli, db_cli, require_schema_at_head
from trustcard.task_model.names import QUEUE

if TYPE_CHECKING:
    from fastapi import FastAPI

cli = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__
)
cli.add_typer(db_cli, name="db")
cli.add_typer(claims_cli, name="claims")


def _print_version(requested: bool) -> None:
    if requested:
        # The installed distribution's version: the one pyproject.toml gave the release.
        typer.echo(f"trustcard {metadata.version('trustcard')}")
        raise typer.Exit()


# Commands that log nothing: the liveness probe runs every few seconds and must start fast.
QUIET_COMMANDS = frozenset({"worker-alive"})


@cli.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """Options before the command (--version)."""
    # Before get_settings() is first called (and cached): the dev stack's DATABASE_URL.
    if ctx.invoked_subcommand in DEV_DATABASE_COMMANDS:
        _use_dev_database()
    # Every command's log lines (alembic's, the dev stack's) in LOG_FORMAT, like API and worker.
    # A bad setting is reported by the command itself (_settings_or_exit), not here.
    if ctx.invoked_subcommand in QUIET_COMMANDS:
        return
    from trustcard.observability.logs import configure_logging

    try:
        settings = get_settings()
    except ConfigError:
        return
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)


# Commands that, run beside `trustcard dev`, should see its database rather than ./trustcard.db.
# Not api/worker/dev: a second dev stack must keep its own.
DEV_DATABASE_COMMANDS = {"db", "claims"}


def _use_dev_database() -> None:
    """Without an explicit DATABASE_URL, use the database of the dev stack in ./.trustcard."""
    from trustcard.config import SECRETS_DIR_ENV
    from trustcard.local.state import AmbiguousDevStacks, stack_for_commands

    secrets_dir = os.environ.get(SECRETS_DIR_ENV)
    if "DATABASE_URL" in os.environ or (secrets_dir and Path(secrets_dir, "DATABASE_URL").exists()):
        return
    try:
        stack = stack_for_commands()
    except AmbiguousDevStacks as exc:
        typer.echo(f"trustcard: {exc}", err=True)
        raise typer.Exit(2) from None
    if stack is None:
        return
    os.environ["DATABASE_URL"] = stack.database_url
    state = "running" if stack.running else "stopped"
    typer.echo(
        f"trustcard: using the database of `trustcard dev` on port {stack.port} ({state}): "
        f"{redact_url(stack.database_url)}; set DATABASE_URL for another",
        err=True,
    )


def _settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        typer.echo(f"trustcard: {exc}", err=True)
        raise typer.Exit(2) from None


def _redis_or_exit(settings: Settings) -> None:
    """A wrong CA, a TLS/non-TLS mismatch or refused credentials: one line and exit 2."""
    from trustcard.redis_clients.preflight import check_redis

    try:
        check_redis(settings)
    except ConfigError as exc:
        typer.echo(f"trustcard: {exc}", err=True)
        raise typer.Exit(2) from None


def _schema_at_head_or_exit(settings: Settings) -> None:
    """API and worker refuse to start on a database without the current schema."""
    problem = require_schema_at_head(settings.DATABASE_URL)
    if problem is not None:
        typer.echo(f"trustcard: {problem}", err=True)
        raise typer.Exit(1)


# Also how `api` tells its worker processes whether to log access lines.
ACCESS_LOG_ENV = "API_ACCESS_LOG"


@cli.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            envvar="API_WORKERS",
            min=1,
            help="uvicorn worker processes sharing the port, for single-host runs with idle "
            "cores. On Kubernetes keep 1 and scale replicas: /metrics, rate limits and "
            "probes are per process.",
        ),
    ] = 1,
    access_log: Annotated[
        bool,
        typer.Option(
            envvar=ACCESS_LOG_ENV,
            help="Log a line per request (uvicorn's access log): ~5 % of the API's CPU per "
            "submission; an Ingress usually logs them already.",
        ),
    ] = True,
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from trustcard.api.header_timeout import HeaderTimeoutProtocol

    settings = _settings_or_exit()
    _redis_or_exit(settings)
    _schema_at_head_or_exit(settings)
    # Worker processes start fresh (spawned) and read the choice from the environment.
    os.environ[ACCESS_LOG_ENV] = "true" if access_log else "false"
    _configure_api_logging()
    uvicorn.run(
        "trustcard.cli:api_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Access lines come from api/request_guard.py (as fields, with route and request id).
        access_log=False,
        # Our handler (text or JSON, with trace ids) instead of uvicorn's own config.
        log_config=None,
        log_level=settings.LOG_LEVEL.lower(),
        # X-Forwarded-For/-Proto only from TRUSTED_PROXIES: from anyone else a spoofed header
        # would change the client's address (and escape its rate limit).
        proxy_headers=bool(settings.TRUSTED_PROXIES),
        forwarded_allow_ips=settings.TRUSTED_PROXIES or None,
        # Closes connections that trickle their headers (HEADER_READ_TIMEOUT_SECONDS).
        http=HeaderTimeoutProtocol,
    )


def _configure_api_logging() -> None:
    from trustcard.observability.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    off = os.environ.get(ACCESS_LOG_ENV, "true").lower() in ("false", "0", "no", "off")
    logging.getLogger("trustcard.access").disabled = off


def api_app() -> FastAPI:
    """The app for uvicorn; worker processes (--workers > 1) start fresh and log like the first."""
    from trustcard.api.main import create_app

    _configure_api_logging()
    return create_app()


def worker_argv(settings: Settings, extra: list[str]) -> list[str]:
    """The Celery worker command line; limits and prefetch come from the app's config."""
    return [
        sys.executable,
        "-m",
        "celery",
        "--app",
        "trustcard.celery_app:celery_app",
        # The start-up banner is printed, not logged: a JSON log stream must not carry it.
        *(["--quiet"] if settings.LOG_FORMAT == "json" else []),
        "worker",
        "--queues",
        QUEUE,
        "--hostname",
        "trustcard@%h",
        "--loglevel",
        settings.LOG_LEVEL,
        # Mingle's start-up `hello` broadcast writes (reply queue) and so exits against a full
        # Redis (issue 14.4); what it syncs, revoked ids, load_cancellations reads instead.
        *([] if "--without-mingle" in extra else ["--without-mingle"]),
        *extra,
    ]


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Exec the Celery worker on queue `analysis` (extra arguments go to `celery worker`)."""
    settings = _settings_or_exit()
    _redis_or_exit(settings)
    _schema_at_head_or_exit(settings)
    argv = worker_argv(settings, list(ctx.args))
    from trustcard.observability.logs import EARLY_LOGGING_ENV

    os.environ[EARLY_LOGGING_ENV] = "1"
    # exec, not a child: on Kubernetes SIGTERM must reach Celery itself for a warm shutdown.
    os.execv(argv[0], argv)  # noqa: S606 - argv is built here, no shell involved


@cli.command()
def exporter(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of /metrics")] = 9809,
) -> None:
    """Serve the depth of queue `analysis` (all priorities) and unacked tasks for Prometheus."""
    from trustcard.observability.exporter import serve

    settings = _settings_or_exit()
    _redis_or_exit(settings)
    serve(settings, [QUEUE], host, port)


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 5555,
    url_prefix: Annotated[
        str, typer.Option(help="Path prefix when served under an Ingress path, e.g. flower")
    ] = "",
    state_file: Annotated[
        str, typer.Option(help="Keep the tasks seen in this file across restarts (default: none)")
    ] = "",
    max_tasks: Annotated[int, typer.Option(min=100, help="Tasks kept in memory")] = 10_000,
    read_only: Annotated[
        bool, typer.Option(help="Refuse worker and task control (shutdown, revoke, pool size)")
    ] = True,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Serve without authentication: only behind an authenticating proxy",
        ),
    ] = False,
) -> None:
    """Serve Flower, the Celery monitor, with basic auth from FLOWER_BASIC_AUTH.

    Tasks appear only when workers send events (WORKER_SEND_TASK_EVENTS=true); extra
    arguments go to Flower (e.g. --purge_offline_workers=600).
    """
    from trustcard.flower_ui import FlowerOptions, run_flower

    settings = _settings_or_exit()
    _redis_or_exit(settings)
    _configure_api_logging()
    options = FlowerOptions(
        address=host,
        port=port,
        url_prefix=url_prefix,
        state_file=state_file,
        max_tasks=max_tasks,
        read_only=read_only,
        no_auth=no_auth,
    )
    try:
        code = run_flower(settings, options, list(ctx.args))
    except ConfigError as exc:
        typer.echo(f"trustcard: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@cli.command("worker-alive")
def worker_alive(
    max_age: Annotated[float, typer.Option(help="Oldest acceptable heartbeat, seconds")] = 60.0,
) -> None:
    """Liveness probe: exit 0 if the worker's heartbeat file is fresh (WORKER_HEARTBEAT_FILE)."""
    from trustcard.worker.health import heartbeat_age

    path = _settings_or_exit().WORKER_HEARTBEAT_FILE
    if not path:
        typer.echo("trustcard: WORKER_HEARTBEAT_FILE is not set", err=True)
        raise typer.Exit(2)
    age = heartbeat_age(Path(path))
    if age is None:
        typer.echo(f"no heartbeat yet at {path}", err=True)
        raise typer.Exit(1)
    if age > max_age:
        typer.echo(f"heartbeat is {age:.0f} s old (max {max_age:g} s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"alive: heartbeat {age:.1f} s old")


@cli.command()
def smoke(
    api_url: Annotated[str, typer.Option(help="Base URL of the API")] = "http://127.0.0.1:8000",
    health_only: Annotated[bool, typer.Option(help="Only check /health/ready")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the task")] = 60.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TRUSTCARD_API_KEY",
            help="API key when the API requires one (default: the first of API_KEYS, "
            "e.g. from TRUSTCARD_SECRETS_DIR as in the chart's helm-test pod)",
        ),
    ] = None,
) -> None:
    """Check a running deployment end to end: ready, then test.add(5, 3) == 8."""
    from trustcard.smoke import SmokeFailure, run_smoke

    try:
        key = api_key or next(iter(_settings_or_exit().api_keys), None)
        for line in run_smoke(api_url, health_only, timeout, key):
            typer.echo(f"ok: {line}")
    except (SmokeFailure, httpx.HTTPError) as exc:
        typer.echo(f"smoke test failed: {exc}", err=True)
        raise typer.Exit(1) from None


@cli.command()
def dev(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    host: Annotated[str, typer.Option(help="API interface")] = "127.0.0.1",
    data_dir: Annotated[
        Path,
        typer.Option(
            help="Base of the state directories: the stack on port P keeps its Redis data "
            "and SQLite file in DATA_DIR/P/"
        ),
    ] = Path(".trustcard"),
    concurrency: Annotated[int, typer.Option(help="Worker pool processes")] = 2,
    flower: Annotated[
        bool, typer.Option("--flower", help="Also run Flower (task events on), port 5555")
    ] = False,
    flower_port: Annotated[int, typer.Option(help="Flower's port with --flower")] = 5555,
) -> None:
    """Run everything locally: embedded Redis, one worker and the API; Ctrl-C stops all.

    The database (DATABASE_URL, else a SQLite file in the state directory) is upgraded first.
    Ctrl-C: running tasks get WORKER_SOFT_SHUTDOWN_TIMEOUT (3 s), then are requeued; twice: kill.
    """
    from trustcard.local.dev import DevStack, PortTaken
    from trustcard.local.state import StateDirInUse

    _settings_or_exit()
    try:
        code = DevStack(
            host=host,
            port=port,
            data_dir=data_dir,
            concurrency=concurrency,
            flower_port=flower_port if flower else 0,
        ).run()
    except (PortTaken, StateDirInUse) as exc:
        typer.echo(f"trustcard dev: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def main() -> None:
    cli()
