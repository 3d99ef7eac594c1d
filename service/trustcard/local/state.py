"""Where one `trustcard dev` stack keeps its state: `<base>/<port>/`, locked while it runs.

Per port, so a second stack (`--port 8010`) runs beside the first with its own Redis
append-only file and SQLite database; the lock (flock, released by the kernel however the
stack ends) keeps anything else from using a directory a running stack owns. `dev.json`
tells other commands (`trustcard claims list`) which database the stack uses.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from trustcard.config import redact_url

DEFAULT_BASE = Path(".trustcard")
LOCK_FILE = "dev.lock"
INFO_FILE = "dev.json"


class StateDirInUse(Exception):
    """Another running `trustcard dev` holds this state directory."""


class AmbiguousDevStacks(Exception):
    """Several dev stacks could be meant; the user has to pick one with DATABASE_URL."""


@dataclass
class DevState:
    """The state directory of the stack on one port; `acquire` locks it for this process."""

    path: Path
    _lock: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def for_port(cls, base: Path, port: int) -> DevState:
        return cls(base / str(port))

    def acquire(self, wait: float = 0.5) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        lock = (self.path / LOCK_FILE).open("a+")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A CLI command may hold a shared lock for an instant while it looks.
                if time.monotonic() > deadline:
                    lock.seek(0)
                    owner = lock.read().strip() or "?"
                    lock.close()
                    raise StateDirInUse(
                        f"{self.path} is in use by another `trustcard dev` (pid {owner}); "
                        "stop it or pass another --port or --data-dir"
                    ) from None
                time.sleep(0.05)
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None

    def write_info(self, info: dict[str, Any]) -> None:
        """dev.json, written whole (rename) and readable only by the owner (it holds a URL)."""
        tmp = self.path / f".{INFO_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(info, out, indent=2)
        tmp.replace(self.path / INFO_FILE)


def is_running(path: Path) -> bool:
    """True while a `trustcard dev` holds the lock of state directory `path`."""
    try:
        lock = (path / LOCK_FILE).open()
    except FileNotFoundError:
        return False
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


@dataclass(frozen=True)
class FoundStack:
    path: Path
    port: int
    database_url: str
    running: bool


def find_stacks(base: Path = DEFAULT_BASE) -> list[FoundStack]:
    """Dev stacks whose state lives under `base` (running or not), by port."""
    found = []
    for info_file in sorted(base.glob(f"*/{INFO_FILE}")):
        try:
            info = json.loads(info_file.read_text())
            found.append(
                FoundStack(
                    info_file.parent,
                    int(info["port"]),
                    str(info["database_url"]),
                    is_running(info_file.parent),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable or half-written: not a stack we can name
    return found


def stack_for_commands(base: Path = DEFAULT_BASE) -> FoundStack | None:
    """The one stack a command run beside it means: the running one, else the only one."""
    stacks = find_stacks(base)
    candidates = [stack for stack in stacks if stack.running] or stacks
    if len(candidates) > 1:
        ports = ", ".join(str(stack.port) for stack in candidates)
        raise AmbiguousDevStacks(
            f"several `trustcard dev` stacks under {base} (ports {ports}); set DATABASE_URL "
            f"to the one you mean, e.g. {redact_url(candidates[0].database_url)}"
        )
    return candidates[0] if candidates else None
