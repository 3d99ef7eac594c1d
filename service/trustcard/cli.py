"""`trustcard api | worker | dev`: run the TrustCard API, a Celery worker, or all of it locally."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from trustcard.config import ConfigError, Settings, get_settings
from trustcard.names import QUEUE

cli = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__
)


def _settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        typer.echo(f"trustcard: {exc}", err=True)
        raise typer.Exit(2) from None


@cli.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    settings = _settings_or_exit()
    uvicorn.run(
        "trustcard.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=settings.LOG_LEVEL.lower(),
        # Behind an Ingress, trust X-Forwarded-* from the proxy for client addresses and scheme.
        proxy_headers=True,
    )


def worker_argv(settings: Settings, extra: list[str]) -> list[str]:
    """The Celery worker command line; limits and prefetch come from the app's config."""
    return [
        sys.executable,
        "-m",
        "celery",
        "--app",
        "trustcard.celery_app:celery_app",
        "worker",
        "--queues",
        QUEUE,
        "--hostname",
        "trustcard@%h",
        "--loglevel",
        settings.LOG_LEVEL,
        *extra,
    ]


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Exec the Celery worker on queue `analysis` (extra arguments go to `celery worker`)."""
    settings = _settings_or_exit()
    argv = worker_argv(settings, list(ctx.args))
    # exec, not a child: on Kubernetes SIGTERM must reach Celery itself for a warm shutdown.
    os.execv(argv[0], argv)  # noqa: S606 - argv is built here, no shell involved


@cli.command()
def dev(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    host: Annotated[str, typer.Option(help="API interface")] = "127.0.0.1",
    data_dir: Annotated[
        Path, typer.Option(help="Where the embedded Redis (and the SQLite file) keep data")
    ] = Path(".trustcard"),
    concurrency: Annotated[int, typer.Option(help="Worker pool processes")] = 2,
) -> None:
    """Run everything locally: embedded Redis, one worker and the API; Ctrl-C stops all."""
    from trustcard.dev import DevStack, PortTaken

    _settings_or_exit()
    try:
        code = DevStack(host=host, port=port, data_dir=data_dir, concurrency=concurrency).run()
    except PortTaken as exc:
        typer.echo(f"trustcard dev: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def main() -> None:
    cli()
