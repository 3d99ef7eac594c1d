"""`python -m bench.reliable_pop`: our broker transport's reliable pop against stock kombu.

One redis-server, one consumer process at a time (kombu `Consumer`, acks every message,
consuming `analysis` and `celery` like our worker), each transport in turn in the same run:
- drain: N messages queued beforehand, consumed as fast as one consumer can (rate, and Redis
  CPU per message from INFO's used_cpu_user + used_cpu_sys);
- idle: the consumer waits 10 s with nothing queued (Redis CPU and commands per second);
- latency: M messages sent one at a time, 20-120 ms apart, to the idle consumer (send to
  receive, one host clock).
Prints a JSON object with both transports' figures and ours / stock ratios.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Consumer, Producer

from bench.stats import latency_summary
from trustcard.local.redis_server import RedisServer

TRANSPORTS = {
    "stock": "redis",
    "ours": "trustcard.redis_clients.broker_transport:Transport",
}
QUEUES = ("analysis", "celery")
OPTIONS = {"visibility_timeout": 600, "unacked_restore_throttle": 1}
IDLE_SECONDS = 10.0


def consume(url: str, transport: str, count: int, out: str) -> None:
    """Consume and ack `count` messages; write each one's receive time and send time."""
    received: list[tuple[float, float]] = []
    with Connection(url, transport=transport, transport_options=OPTIONS) as conn:  # type: ignore[no-untyped-call]

        def on_message(body: dict[str, Any], message: Any) -> None:
            received.append((time.time(), body["sent"]))
            message.ack()

        with Consumer(conn, [Queue(q) for q in QUEUES], callbacks=[on_message]):  # type: ignore[no-untyped-call]
            while len(received) < count:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=1)
    Path(out).write_text(json.dumps(received))


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def _publish(producer: Producer, count: int, gap: tuple[float, float] | None = None) -> None:
    for _ in range(count):
        if gap:
            time.sleep(random.uniform(*gap))
        producer.publish({"sent": time.time(), "pad": "x" * 600}, routing_key="analysis")  # type: ignore[no-untyped-call]


def measure(server: RedisServer, name: str, drain: int, latency: int) -> dict[str, float]:
    url = server.url(0)
    client = redis.Redis.from_url(url)
    client.flushdb()
    out = Path(tempfile.mkstemp(suffix=f".{name}.json")[1])
    with Connection(url) as conn:  # type: ignore[no-untyped-call]
        producer = Producer(conn)  # type: ignore[no-untyped-call]
        for queue in QUEUES:
            Queue(queue, channel=conn.default_channel).declare()  # type: ignore[no-untyped-call]
        _publish(producer, drain)
        cpu_before = _cpu(client)
        consumer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.reliable_pop",
                "consume",
                url,
                TRANSPORTS[name],
                str(drain + latency),
                str(out),
            ]
        )
        while client.llen("analysis") or client.hlen("unacked"):
            time.sleep(0.01)
        drain_cpu = _cpu(client) - cpu_before
        time.sleep(1)
        cpu_before, commands_before = _cpu(client), _commands(client)
        time.sleep(IDLE_SECONDS)
        idle_cpu = (_cpu(client) - cpu_before) / IDLE_SECONDS
        idle_commands = (_commands(client) - commands_before) / IDLE_SECONDS
        _publish(producer, latency, gap=(0.02, 0.12))
        consumer.wait(120)
    received = json.loads(out.read_text())
    out.unlink()
    drained = received[:drain]
    drain_seconds = drained[-1][0] - drained[0][0]
    waits_ms = [(received_at - sent) * 1000 for received_at, sent in received[drain:]]
    summary = latency_summary(waits_ms)
    return {
        "drain_per_second": drain / drain_seconds,
        "redis_cpu_us_per_message": drain_cpu / drain * 1e6,
        "idle_redis_cpu_percent": idle_cpu * 100,
        "idle_commands_per_second": idle_commands,
        "idle_latency_p50_ms": summary["p50"],
        "idle_latency_p95_ms": summary["p95"],
    }


def main(drain: int = 3000, latency: int = 150) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(data_dir=Path(workdir), appendonly=False).start()
        try:
            figures = {name: measure(server, name, drain, latency) for name in TRANSPORTS}
        finally:
            server.stop()
    ratios = {key: figures["ours"][key] / figures["stock"][key] for key in figures["ours"]}
    print(json.dumps({**figures, "ours / stock": ratios}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["consume"]:
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main(*(int(arg) for arg in sys.argv[1:]))
