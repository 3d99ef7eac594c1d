"""Migrations build the models' schema from empty and take it down again, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from tests.postgres_server import scratch_database, throwaway_cluster
from trustcard.db import migrate
from trustcard.db.engine import UnsupportedDatabase, create_db_engine, normalize_database_url
from trustcard.db.models import Base

TABLES = {"analyses", "stage_results", "claims"}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _assert_upgrade_and_downgrade(engine: Engine) -> None:
    assert migrate.current_revision(engine) is None
    assert not migrate.schema_status(engine).at_head
    migrate.upgrade(engine)
    assert _tables(engine) == TABLES
    status = migrate.schema_status(engine)
    assert status.at_head
    assert status.describe() == f"database schema is at head ({migrate.head_revision()})"
    # The migration creates exactly what the models declare: no column, index or type drift.
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    migrate.downgrade(engine, "base")
    assert _tables(engine) == set()
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert _tables(engine) == TABLES


def test_upgrade_from_empty_matches_models_and_downgrades_cleanly(empty_engine: Engine) -> None:
    _assert_upgrade_and_downgrade(empty_engine)


def test_a_spawned_postgres_cluster_migrates_too() -> None:
    # The path CI takes on a machine without a running server: initdb + postgres of our own.
    with throwaway_cluster() as cluster, scratch_database(cluster.dsn) as url:
        engine = create_db_engine(url)
        try:
            _assert_upgrade_and_downgrade(engine)
        finally:
            engine.dispose()


def test_status_names_the_command_to_run(empty_engine: Engine) -> None:
    line = migrate.schema_status(empty_engine).describe()
    assert line == (
        f"database schema is empty (no migrations applied), this version needs "
        f"{migrate.head_revision()}: run `trustcard db upgrade`"
    )


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: object) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/pragmas.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/tc", "postgresql+psycopg://u:p@db:5432/tc"),
        ("postgresql://u@db/tc", "postgresql+psycopg://u@db/tc"),
        ("postgresql+psycopg://u@db/tc", "postgresql+psycopg://u@db/tc"),
        ("sqlite:///./trustcard.db", "sqlite:///./trustcard.db"),
    ],
)
def test_database_urls_are_normalised(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize("url", ["mysql://db/tc", "trustcard.db"])
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsupportedDatabase):
        normalize_database_url(url)
