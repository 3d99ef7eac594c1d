"""A real Prometheus server on loopback, scraping live processes every second."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.stack import Proc, wait_until
from trustcard.local.redis_server import free_port


@dataclass
class PrometheusServer:
    binary: str
    workdir: Path
    # job name -> "host:port" targets; each job gets a `namespace` label like in a cluster.
    targets: dict[str, list[str]]
    rule_groups: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        rules_file = self.workdir / "rules.yaml"
        rules_file.write_text(yaml.safe_dump({"groups": self.rule_groups}))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_file)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": hosts, "labels": {"namespace": "trustcard"}}],
                }
                for job, hosts in self.targets.items()
            ],
        }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.proc = Proc(
            "prometheus",
            [
                self.binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            {},
            self.workdir / "prometheus.log",
        ).start()
        wait_until(self._ready, 30, interval=0.2, what="Prometheus to be ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.alive(), self.proc.log()[-3000:]
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises with Prometheus' error for an invalid expression."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets_up(self) -> dict[str, float]:
        """Scrape health per job (1 = last scrape succeeded)."""
        up = self.query("up")
        return {r["metric"]["job"]: float(r["value"][1]) for r in up}

    def wait_for_scrapes(self, seconds: float = 3.0) -> None:
        wait_until(
            lambda: (
                len(self.targets_up()) == len(self.targets)
                and all(v == 1 for v in self.targets_up().values())
            ),
            30,
            interval=0.5,
            what="every target scraped successfully",
        )
        time.sleep(seconds)

    def rule_health(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]
