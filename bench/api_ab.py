"""Interleaved A/B of the API's submission path: CPU per submission, rate, raw loop alongside.

    python -m bench.api_ab --rounds 3 old=/tmp/old/service new=service [--paced 700]

Each variant is a source directory put first on the API's PYTHONPATH (e.g. `git archive` of
another commit's `service/`); extra `,NAME=VALUE` items set its environment. Per round and
variant: a fresh redis-server and API, a warm-up, a closed loop of 64 clients, optionally a
paced load, then `bench.raw_client produce` against the same Redis. One JSON line per run.
On a shared machine compare `cpu_ms` (the API process's CPU per submission) within a round.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import psutil

from bench.service import Service, generate_load
from bench.stats import latency_summary

CLIENTS = 64
GENERATORS = 2  # one generator process per 32 clients, as the full benchmark runs it
RAW_CALLS = 3000


class VariantService(Service):
    """A Service whose API imports trustcard from `source` (and gets `extra_env`)."""

    def __init__(self, workdir: Path, source: str, extra_env: dict[str, str]) -> None:
        super().__init__(workdir)
        self.source = source
        self.extra_env = extra_env

    def env(self, **extra: str) -> dict[str, str]:
        env = super().env(**extra)
        env["PYTHONPATH"] = os.pathsep.join([self.source, env.get("PYTHONPATH", "")])
        env.update(self.extra_env)
        return env


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_variant(
    name: str, source: str, extra_env: dict[str, str], seconds: float, paced: float
) -> dict[str, Any]:
    service = VariantService(Path(tempfile.mkdtemp(prefix=f"api-ab-{name}-")), source, extra_env)
    service.start()
    try:
        generate_load(service.base_url, "closed", 1, 1.5, clients=16)  # warm-up
        service.purge_queue()
        before = _cpu_seconds(service.api_pid)
        closed = generate_load(service.base_url, "closed", GENERATORS, seconds, clients=CLIENTS)
        used = _cpu_seconds(service.api_pid) - before
        service.purge_queue()
        summary = latency_summary(closed["latencies_ms"])
        outcome: dict[str, Any] = {
            "variant": name,
            "rate": closed["requests"] / closed["seconds"],
            "cpu_ms": 1000 * used / max(closed["requests"], 1),
            "p50": summary["p50"],
            "p99": summary["p99"],
            "errors": closed["errors"],
        }
        if paced:
            before = _cpu_seconds(service.api_pid)
            opened = generate_load(service.base_url, "open", GENERATORS, seconds, rate=paced)
            used = _cpu_seconds(service.api_pid) - before
            service.purge_queue()
            paced_summary = latency_summary(opened["latencies_ms"])
            outcome.update(
                paced_rate=paced,
                paced_p50=paced_summary["p50"],
                paced_p99=paced_summary["p99"],
                paced_dropped=opened["dropped"],
                paced_cpu_ms=1000 * used / max(opened["requests"], 1),
            )
        raw = service.celery_client("produce", RAW_CALLS, 120)
        outcome["raw_rate"] = raw["count"] / raw["seconds"]
        outcome["ratio"] = outcome["rate"] / outcome["raw_rate"]
        return outcome
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_ab")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--paced", type=float, default=0.0, help="paced load (req/s); 0: none")
    parser.add_argument("variants", nargs="+", help="name=source_dir[,NAME=VALUE...]")
    args = parser.parse_args()
    for round_index in range(args.rounds):
        for variant in args.variants:
            name, rest = variant.split("=", 1)
            source, *settings = rest.split(",")
            extra_env = dict(item.split("=", 1) for item in settings)
            outcome = run_variant(name, source, extra_env, args.seconds, args.paced)
            outcome["round"] = round_index
            outcome["load1"] = os.getloadavg()[0]
            rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in outcome.items()}
            print(json.dumps(rounded), flush=True)


if __name__ == "__main__":
    main()
