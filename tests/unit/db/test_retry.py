"""Bounded retries of database steps, on a real SQLite file locked by another connection."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from trustcard.db.retry import DatabaseStepFailed, with_retry


def _locked_database(tmp_path: Path) -> tuple[sqlite3.Connection, str]:
    path = tmp_path / "locked.db"
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x INTEGER UNIQUE)")
    setup.close()
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    return locker, f"sqlite:///{path}"


def _writer(url: str) -> int:
    engine = create_engine(url, connect_args={"timeout": 0.05})
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t (x) VALUES (1)"))
        return 1
    finally:
        engine.dispose()


def test_a_lock_released_within_the_bound_is_waited_out(tmp_path: Path) -> None:
    locker, url = _locked_database(tmp_path)
    release = threading.Timer(0.5, lambda: locker.execute("COMMIT"))
    release.start()
    try:
        assert with_retry(lambda: _writer(url), what="writing", seconds=10) == 1
    finally:
        release.join()
        locker.close()


def test_a_lock_held_past_the_bound_ends_in_one_readable_error(tmp_path: Path) -> None:
    locker, url = _locked_database(tmp_path)
    try:
        with pytest.raises(DatabaseStepFailed) as error:
            with_retry(lambda: _writer(url), what="storing the result", seconds=0.5)
    finally:
        locker.close()
    message = str(error.value)
    assert message.startswith("database unavailable while storing the result (")
    assert "database is locked" in message
    assert "\n" not in message


def test_a_constraint_violation_is_not_retried(tmp_path: Path) -> None:
    locker, url = _locked_database(tmp_path)
    locker.execute("COMMIT")
    locker.close()
    _writer(url)
    calls = []

    def step() -> int:
        calls.append(1)
        return _writer(url)

    with pytest.raises(IntegrityError):
        with_retry(step, what="writing", seconds=10)
    assert len(calls) == 1
