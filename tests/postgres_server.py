"""A real PostgreSQL for tests: the one on 127.0.0.1:5432 when it answers, else a throwaway one.

Each user gets a database of its own (created here, dropped after), so tests never touch data
they did not make. The throwaway cluster comes from `initdb` + `postgres` (PATH, `pg_config
--bindir`, Debian's /usr/lib/postgresql/*/bin or .tools/) on a free port in a temporary directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.stack import wait_until
from trustcard.local.redis_server import free_port

RUNNING_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=2"
ROOT = Path(__file__).resolve().parent.parent
# What CI must install when no PostgreSQL binaries are there (Debian's server package).
DEBIAN_PACKAGE = "postgresql"


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def find_bindir() -> Path | None:
    """Where initdb and postgres live, or None."""
    candidates: list[str] = []
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).resolve().parent))
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        candidates.append(
            subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(
        glob.glob(str(ROOT / ".tools/postgresql/usr/lib/postgresql/*/bin")), reverse=True
    )
    for directory in candidates:
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "postgres").is_file():
            return Path(directory)
    return None


def server_user() -> str:
    """Debian's package creates `postgres`; binaries unpacked without it run as `nobody`."""
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("no `postgres` or `nobody` user to run PostgreSQL as (it refuses root)")


def _as_user(name: str) -> Callable[[], None] | None:
    """PostgreSQL refuses to run as root: drop to `name` in the child when we are root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(name)

    def drop() -> None:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return drop


@dataclass
class Cluster:
    """A PostgreSQL server this test session started."""

    dsn: str
    server: subprocess.Popen[bytes]
    # How it was started, so a test can start it again on the same data directory and port.
    command: list[str] = field(default_factory=list)
    start_options: dict[str, Any] = field(default_factory=dict)

    def restart(self) -> None:
        """Start the stopped server again (same data, same port) and wait until it answers."""
        assert self.server.poll() is not None, "stop it first"
        self.server = subprocess.Popen(self.command, **self.start_options)
        wait_until(lambda: _answers(self.dsn), 30, 0.1, "PostgreSQL to start again")

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its `postgres` database."""
        params = psycopg.conninfo.conninfo_to_dict(self.dsn)
        return f"postgresql+psycopg://postgres@{params['host']}:{params['port']}/postgres"

    def stop(self) -> None:
        if self.server.poll() is not None:
            return
        self.server.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, then exits
        try:
            self.server.wait(20)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """initdb + postgres on a free port, stopped and deleted after."""
    bindir = find_bindir()
    if bindir is None:
        message = (
            f"no PostgreSQL server binaries (initdb, postgres) found; install Debian's "
            f"{DEBIAN_PACKAGE!r} package"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's tmp_path: its root-only parents would lock the postgres user out.
    workdir = Path(tempfile.mkdtemp(prefix="trustcard-pg-"))
    owner = server_user()
    preexec = _as_user(owner)
    if preexec is not None:
        entry = pwd.getpwnam(owner)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    data = workdir / "data"
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        preexec_fn=preexec,
    )
    port = free_port()
    log = (workdir / "postgres.log").open("ab")
    command = [
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(workdir),
        "-c",
        "fsync=off",
    ]
    start_options: dict[str, Any] = {
        "stdout": log,
        "stderr": subprocess.STDOUT,
        "preexec_fn": preexec,
        "start_new_session": True,
    }
    server = subprocess.Popen(command, **start_options)
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"
    cluster = Cluster(dsn, server, command, start_options)
    try:
        wait_until(
            lambda: server.poll() is not None or _answers(dsn), 30, 0.1, "PostgreSQL to start"
        )
        assert server.poll() is None, (workdir / "postgres.log").read_text()
        yield cluster
    finally:
        cluster.stop()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def admin_dsn() -> Iterator[str]:
    """The running server's admin DSN when it answers, else a throwaway cluster's."""
    if _answers(RUNNING_SERVER):
        yield RUNNING_SERVER
        return
    with throwaway_cluster() as cluster:
        yield cluster.dsn


@contextlib.contextmanager
def scratch_database(admin: str) -> Iterator[str]:
    """A new, empty database on the server; yields its SQLAlchemy URL and drops it after."""
    name = f"trustcard_test_{uuid.uuid4().hex[:12]}"
    params = psycopg.conninfo.conninfo_to_dict(admin)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{params['host']}:{params['port']}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
