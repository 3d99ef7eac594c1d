"""`trustcard db ...` and `trustcard claims ...`: migrations and the fact-check claims.

SQLAlchemy and Alembic are imported inside the commands: every other `trustcard` command
(probes such as `worker-alive` among them) would otherwise pay ~0.3 s to load them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trustcard.config import ConfigError, get_settings, redact_url

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

db_cli = typer.Typer(
    no_args_is_help=True, help="Database schema: Alembic migrations shipped in the package."
)
claims_cli = typer.Typer(
    no_args_is_help=True, help="Known false or disputed claims the fact-check matches against."
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"trustcard: {message}", err=True)
    return typer.Exit(code)


def describe_database_error(url: str, exc: DBAPIError) -> str:
    """One line: which database (password hidden) and the driver's first line of complaint."""
    first_line = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else ""
    return f"database {redact_url(url)} unavailable: {type(exc.orig or exc).__name__}: {first_line}"


@contextmanager
def database() -> Iterator[Engine]:
    """The configured database; every failure to reach it ends the command with one line."""
    from sqlalchemy.exc import DBAPIError

    from trustcard.db.engine import UnsupportedDatabase, create_db_engine

    try:
        url = get_settings().DATABASE_URL
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    try:
        engine = create_db_engine(url)
    except UnsupportedDatabase as exc:
        raise _fail(str(exc), 2) from None
    try:
        yield engine
    except DBAPIError as exc:
        raise _fail(describe_database_error(url, exc)) from None
    finally:
        engine.dispose()


@db_cli.command("upgrade")
def upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from trustcard.db import migrate

    with database() as engine:
        migrate.upgrade(engine, revision)
        typer.echo(migrate.schema_status(engine).describe())


@db_cli.command("downgrade")
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base")] = "-1",
) -> None:
    """Undo migrations down to REVISION (default: one step; `base` removes every table)."""
    from trustcard.db import migrate

    with database() as engine:
        migrate.downgrade(engine, revision)
        typer.echo(f"database schema is now at {migrate.current_revision(engine) or 'base'}")


@db_cli.command("current")
def current() -> None:
    """Print the applied revision (or `none`)."""
    from trustcard.db import migrate

    with database() as engine:
        typer.echo(migrate.current_revision(engine) or "none")


@db_cli.command("check")
def check() -> None:
    """Exit 0 when the schema is at head, else 1 (what the chart waits on before starting)."""
    from trustcard.db import migrate

    with database() as engine:
        status = migrate.schema_status(engine)
    if not status.at_head:
        raise _fail(status.describe())
    typer.echo(status.describe())


@contextmanager
def _session() -> Iterator[Session]:
    from sqlalchemy.orm import sessionmaker

    from trustcard.db import migrate

    with database() as engine:
        status = migrate.schema_status(engine)
        if not status.at_head:
            raise _fail(status.describe())
        with sessionmaker(engine, expire_on_commit=False)() as session:
            yield session


@claims_cli.command("import")
def import_claims(
    file: Annotated[Path, typer.Argument(help="A .json list of {text, verdict, sources} or .csv")],
) -> None:
    """Add claims from FILE; claims already stored (same text) get the file's verdict/sources."""
    from trustcard.db import repository
    from trustcard.db.claims_file import ClaimsFileError, read_claims_file

    try:
        claims = read_claims_file(file)
    except ClaimsFileError as exc:
        raise _fail(str(exc), 2) from None
    with _session() as session:
        report = repository.import_claims(session, claims)
    typer.echo(f"claims: {report.added} added, {report.updated} updated, from {file}")


@claims_cli.command("list")
def list_claims() -> None:
    """Print the stored claims, one per line: id, verdict, text, sources."""
    from trustcard.db import repository

    with _session() as session:
        for claim in repository.list_claims(session):
            sources = " ".join(claim.sources)
            typer.echo(f"{claim.id}\t{claim.verdict}\t{claim.text}\t{sources}".rstrip())


def require_schema_at_head(url: str) -> str | None:
    """None when the database is reachable and at head, else the one line saying what is wrong."""
    from sqlalchemy.exc import DBAPIError

    from trustcard.db import migrate
    from trustcard.db.engine import UnsupportedDatabase, create_db_engine

    try:
        engine = create_db_engine(url)
    except UnsupportedDatabase as exc:
        return str(exc)
    try:
        status = migrate.schema_status(engine)
    except DBAPIError as exc:
        return describe_database_error(url, exc)
    finally:
        engine.dispose()
    return None if status.at_head else status.describe()
