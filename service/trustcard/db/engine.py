"""Engines and sessions from DATABASE_URL: SQLite locally, PostgreSQL (psycopg 3) in production."""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Fail within seconds when the server is away, so the API can answer 503 instead of hanging.
CONNECT_TIMEOUT_SECONDS = 3
# SQLite: the API and the worker processes write the same file; wait for the lock, not fail.
SQLITE_BUSY_TIMEOUT_MS = 5000
POSTGRES_SCHEMES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


class UnsupportedDatabase(ValueError):
    """DATABASE_URL names a database we do not support."""


def normalize_database_url(url: str) -> str:
    """`postgres://` and `postgresql://` mean psycopg 3; SQLite stays as it is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UnsupportedDatabase(f"DATABASE_URL is not a URL: {url!r}")
    if scheme in POSTGRES_SCHEMES:
        return f"{POSTGRES_SCHEMES[scheme]}://{rest}"
    if scheme == "sqlite":
        return url
    raise UnsupportedDatabase(
        f"DATABASE_URL scheme {scheme!r} is not supported: use sqlite:/// or postgresql://"
    )


def create_db_engine(url: str, **options: Any) -> Engine:
    """An engine with timeouts set; SQLite gets WAL, foreign keys and a busy timeout."""
    normalized = normalize_database_url(url)
    if make_url(normalized).get_backend_name() == "sqlite":
        engine = create_engine(
            normalized, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **options
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        normalized,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        # A connection the server dropped (restart, failover) is replaced, not handed out.
        pool_pre_ping=True,
        **options,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers (the API) do not block the writer (a worker) and the other way round.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


_lock = threading.Lock()
_factories: dict[tuple[str, int], sessionmaker[Session]] = {}


def session_factory(url: str) -> sessionmaker[Session]:
    """The process's session factory for `url`; a forked worker child builds its own pool."""
    key = (url, os.getpid())
    with _lock:
        factory = _factories.get(key)
        if factory is None:
            factory = sessionmaker(create_db_engine(url), expire_on_commit=False)
            _factories[key] = factory
        return factory


def dispose_all() -> None:
    """Close this process's pooled connections (tests, shutdown)."""
    with _lock:
        for (_, pid), factory in list(_factories.items()):
            if pid == os.getpid():
                factory.kw["bind"].dispose()
        _factories.clear()
