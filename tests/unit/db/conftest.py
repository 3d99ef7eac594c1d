"""Every storage test runs on SQLite and on a real PostgreSQL, each in a fresh database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.postgres_server import admin_dsn, scratch_database
from trustcard.db import migrate
from trustcard.db.engine import create_db_engine


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    with admin_dsn() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trustcard.db'}"
        return
    admin: str = request.getfixturevalue("postgres_admin")
    with scratch_database(admin) as url:
        yield url


@pytest.fixture
def empty_engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(empty_engine: Engine) -> Engine:
    migrate.upgrade(empty_engine)
    return empty_engine


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with sessionmaker(engine, expire_on_commit=False)() as db:
        yield db
