"""HTTP load generator process: keep-alive HTTP/1.1 over raw asyncio streams (uvloop if present).

    python -m bench.httpgen closed URL --clients 16 --seconds 8 [--requests N] [--start-at T]
    python -m bench.httpgen open URL --rate 500 --seconds 8 [--connections 64] [--start-at T]

One httpx process topped out near 200 submissions/s at 64 clients here, measuring itself
rather than the API; a hand-written request and a Content-Length parser are far cheaper (this
generator used 2-6 % of a core at the API's rates). Several processes can share one load
(`--start-at` aligns them).
Prints (or writes to --result) one JSON object: requests, errors, dropped, seconds,
latencies_ms, task_ids, and the CPU seconds the generator itself used while timing (so a
saturated generator shows).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import resource
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SUBMIT_TARGET = "/tasks/test/add?x=1&y=2"
BACKLOG_GRACE = 2.0  # open loop: seconds after the window that a backlog may still be sent


@dataclass
class Outcome:
    """What one generator process saw."""

    requests: int = 0
    errors: int = 0
    # Open loop only: due submissions never sent because the backlog outlasted the grace
    # period; each counts in latencies_ms with the time it had waited (a lower bound).
    dropped: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0


class Connection:
    """One keep-alive connection sending POST SUBMIT_TARGET and reading the whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.request = (
            f"POST {SUBMIT_TARGET} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Length: 0\r\nAccept: application/json\r\n\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def submit(self) -> tuple[int, bytes]:
        """Status code and body of one submission (reconnects if the server closed)."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length = 0
        keep_alive = True
        for line in header_lines:
            name, _, value = line.partition(":")
            lowered = name.strip().lower()
            if lowered == "content-length":
                length = int(value)
            elif lowered == "connection" and value.strip().lower() == "close":
                keep_alive = False
        body = await self.reader.readexactly(length) if length else b""
        if not keep_alive:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _record(outcome: Outcome, status: int, body: bytes, since: float, keep_ids: bool) -> None:
    outcome.latencies_ms.append((time.perf_counter() - since) * 1000)
    if status != 202:
        outcome.errors += 1
    elif keep_ids:
        outcome.task_ids.append(json.loads(body)["task_id"])


async def _sleep_until_wall(at: float) -> None:
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def closed_loop(
    url: str, clients: int, seconds: float, max_requests: int, start_at: float, keep_ids: bool
) -> Outcome:
    """`clients` connections, each sending its next POST as soon as the last one answered."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connections = [Connection(host, port) for _ in range(clients)]
    # Connect (one untimed request each) before the clock starts.
    warm = await asyncio.gather(*(c.submit() for c in connections))
    outcome = Outcome(errors=sum(1 for status, _ in warm if status != 202))
    await _sleep_until_wall(start_at)
    cpu_at_start = cpu_seconds()
    started = time.perf_counter()
    deadline = started + seconds
    issued = 0

    async def client(connection: Connection) -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            since = time.perf_counter()
            try:
                status, body = await connection.submit()
            except (OSError, asyncio.IncompleteReadError, ValueError):
                outcome.errors += 1
                connection.close()
                continue
            _record(outcome, status, body, since, keep_ids)

    await asyncio.gather(*(client(c) for c in connections))
    outcome.seconds = time.perf_counter() - started
    outcome.cpu_seconds = cpu_seconds() - cpu_at_start
    outcome.requests = len(outcome.latencies_ms)
    for connection in connections:
        connection.close()
    return outcome


async def open_loop(
    url: str, rate: float, seconds: float, connections: int, start_at: float
) -> Outcome:
    """Submissions due at a fixed rate, each timed from when it was due (no coordinated omission).

    A submission waits for a free connection if all are busy; that wait counts in its latency.
    If the server falls behind, the backlog still due BACKLOG_GRACE s after the window is
    dropped (timed as waited so far), so an overloaded run ends instead of queueing on.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    pool = [Connection(host, port) for _ in range(connections)]
    await asyncio.gather(*(c.submit() for c in pool))
    outcome = Outcome()
    due: asyncio.Queue[float | None] = asyncio.Queue()
    await _sleep_until_wall(start_at)
    cpu_at_start = cpu_seconds()
    started = time.perf_counter()
    count = max(1, round(rate * seconds))

    cutoff = started + seconds + BACKLOG_GRACE

    async def sender(connection: Connection) -> None:
        while (since := await due.get()) is not None:
            if time.perf_counter() > cutoff:
                outcome.dropped += 1
                outcome.latencies_ms.append((time.perf_counter() - since) * 1000)
                continue
            try:
                status, body = await connection.submit()
            except (OSError, asyncio.IncompleteReadError, ValueError):
                outcome.errors += 1
                connection.close()
                continue
            _record(outcome, status, body, since, keep_ids=False)

    senders = [asyncio.create_task(sender(c)) for c in pool]
    for i in range(count):
        at = started + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(at)
    for _ in pool:
        due.put_nowait(None)
    await asyncio.gather(*senders)
    outcome.seconds = time.perf_counter() - started
    outcome.cpu_seconds = cpu_seconds() - cpu_at_start
    outcome.requests = len(outcome.latencies_ms)
    for connection in pool:
        connection.close()
    return outcome


def run(main: Callable[[], Coroutine[Any, Any, Outcome]]) -> Outcome:
    """Run on uvloop when it is installed (uvicorn[standard] brings it), else asyncio's loop."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.httpgen")
    parser.add_argument("mode", choices=("closed", "open"))
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=10**9)
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch seconds")
    parser.add_argument("--ids", action="store_true", help="return the submitted task ids")
    parser.add_argument("--result", type=Path, help="write the JSON here instead of stdout")
    args = parser.parse_args()
    if args.mode == "closed":
        outcome = run(
            lambda: closed_loop(
                args.url, args.clients, args.seconds, args.requests, args.start_at, args.ids
            )
        )
    else:
        outcome = run(
            lambda: open_loop(args.url, args.rate, args.seconds, args.connections, args.start_at)
        )
    text = json.dumps(asdict(outcome))
    if args.result is None:
        print(text)
    else:
        args.result.write_text(text)


if __name__ == "__main__":
    main()
