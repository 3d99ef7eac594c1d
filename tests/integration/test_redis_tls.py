"""TLS and managed Redis: a real `redis-server --tls-port` with certificates made here.

Verify-full end to end (API -> worker -> completed, exporter) with an ACL user and a client
certificate; every misconfiguration ends `trustcard api|worker|exporter` with one line and exit 2.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.metrics_text import scrape, value
from tests.stack import Proc, ServiceStack, poll_until, submit, trustcard_cmd, wait_until
from tests.tls_redis import Pki, TlsRedisServer, make_ca, make_pki
from trustcard.celery_app import create_celery_app
from trustcard.config import Settings
from trustcard.local.redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration

# An ACL user besides `default`: if a client dropped the user name it would authenticate as
# `default` with the wrong password and fail.
ACL_USER, ACL_PASSWORD, ADMIN_PASSWORD = "trustcard", "acl-secret", "admin-secret"
ACL_RULE = [ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all"]
# A misconfigured start must end well within this (a few seconds nominal, slack for CI load).
START_BOUND_SECONDS = 20


@dataclass
class Servers:
    pki: Pki
    other_ca: Path
    tls: TlsRedisServer
    plain: RedisServer

    def tls_url(self, db: int = 0) -> str:
        return f"rediss://{ACL_USER}:{ACL_PASSWORD}@localhost:{self.tls.tls_port}/{db}"

    def tls_env(self) -> dict[str, str]:
        return {
            "REDIS_TLS_CA_FILE": str(self.pki.ca),
            "REDIS_TLS_CERT_FILE": str(self.pki.client_cert),
            "REDIS_TLS_KEY_FILE": str(self.pki.client_key),
        }


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("tls")
    pki = make_pki(root / "pki")
    other_ca, _ = make_ca(root / "other", "other-ca")
    tls = TlsRedisServer(
        data_dir=root / "tls-redis",
        pki=pki,
        password=ADMIN_PASSWORD,
        extra_args=["--user", *ACL_RULE],
    ).start()
    plain = RedisServer(data_dir=root / "plain-redis", appendonly=False).start()
    try:
        yield Servers(pki, other_ca, tls, plain)
    finally:
        tls.stop()
        plain.stop()


def _users_connected(server: TlsRedisServer) -> list[str]:
    client = server.client()
    try:
        return [str(entry["user"]) for entry in client.client_list()]
    finally:
        client.close()


def test_verify_full_end_to_end_with_acl_user_and_client_certificate(
    tmp_path: Path, servers: Servers
) -> None:
    env = {
        "REDIS_URL": servers.tls_url(0),
        "RESULT_BACKEND_URL": servers.tls_url(1),
        **servers.tls_env(),
    }
    # The stack's own plain Redis is left unused: every URL points at the TLS server.
    stack = ServiceStack(tmp_path, env_overrides=env)
    try:
        stack.start()
        started = time.monotonic()
        with stack.client() as client:
            assert client.get("/health/ready").status_code == 200
            sent = 20
            ids = [submit(client, "/tasks/test/add", x=i, y=1) for i in range(sent)]
            results = [poll_until(client, task_id, {"completed"}, timeout=60) for task_id in ids]
        assert [r["result"] for r in results] == [i + 1 for i in range(sent)]
        print(
            f"TLS verify-full, mutual TLS, ACL user: sent={sent} completed={len(results)} "
            f"lost=0 duplicated=0 seconds={time.monotonic() - started:.1f}"
        )
        # The exporter, with the user in the URL and the password from REDIS_PASSWORD.
        port = free_port()
        exporter = Proc(
            "exporter",
            trustcard_cmd("exporter", "--port", str(port)),
            {
                **os.environ,
                **servers.tls_env(),
                "REDIS_URL": f"rediss://{ACL_USER}@localhost:{servers.tls.tls_port}/0",
                "REDIS_PASSWORD": ACL_PASSWORD,
            },
            tmp_path / "exporter.log",
        ).start()
        try:

            def exporter_reads_redis() -> bool:
                assert exporter.alive(), exporter.log()
                try:
                    samples = scrape(f"http://127.0.0.1:{port}/metrics")
                except httpx.HTTPError:
                    return False
                return value(samples, "trustcard_queue_exporter_redis_up") == 1

            wait_until(exporter_reads_redis, 30, what="the exporter to read Redis over TLS")
            # API, worker and exporter all signed in as the ACL user (only our probe is default).
            users = _users_connected(servers.tls)
            assert users.count("default") == 1, users
            assert users.count(ACL_USER) >= 4, users
        finally:
            exporter.stop()
    finally:
        stack.stop()


def test_live_celery_connections_use_the_tls_settings(servers: Servers) -> None:
    """Read the effective options back from kombu's and the backend's live connections."""
    settings = Settings.model_validate(
        {"REDIS_URL": servers.tls_url(0), "RESULT_BACKEND_URL": servers.tls_url(1)}
        | servers.tls_env()
    )
    app = create_celery_app(settings)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert channel.client.ping()
        live = [channel.client.connection_pool, app.backend.client.connection_pool]
        assert app.backend.client.ping()
        for pool in live:
            kwargs = pool.connection_kwargs
            assert issubclass(pool.connection_class, redis.SSLConnection)
            assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
            assert kwargs["ssl_check_hostname"] is True
            assert kwargs["ssl_ca_certs"] == str(servers.pki.ca)
            assert kwargs["ssl_certfile"] == str(servers.pki.client_cert)
            assert kwargs["username"] == ACL_USER


def _run(command: str, env: dict[str, str], tmp_path: Path) -> tuple[int, str, float]:
    args = {"api": ["api", "--port", str(free_port())], "exporter": ["exporter", "--port", "0"]}
    full_env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'never-used.db'}",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    started = time.monotonic()
    result = subprocess.run(
        trustcard_cmd(*args.get(command, [command])),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=START_BOUND_SECONDS * 3,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def _assert_refused(command: str, env: dict[str, str], tmp_path: Path, expected: str) -> None:
    code, output, seconds = _run(command, env, tmp_path)
    print(f"{command}: exit {code} after {seconds:.1f} s: {output.strip()}")
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("trustcard: "), output
    assert expected in lines[0], output
    assert seconds < START_BOUND_SECONDS


@pytest.mark.parametrize("command", ["api", "worker", "exporter"])
def test_wrong_ca_is_refused_in_one_line(command: str, tmp_path: Path, servers: Servers) -> None:
    env = {
        "REDIS_URL": servers.tls_url(0),
        **servers.tls_env(),
        "REDIS_TLS_CA_FILE": str(servers.other_ca),
    }
    _assert_refused(command, env, tmp_path, "failed verification")


@pytest.mark.parametrize("command", ["api", "worker", "exporter"])
def test_rediss_to_a_plain_port_is_refused_in_one_line(
    command: str, tmp_path: Path, servers: Servers
) -> None:
    env = {"REDIS_URL": f"rediss://localhost:{servers.plain.port}/0", **servers.tls_env()}
    _assert_refused(command, env, tmp_path, "serves plain Redis without TLS: use redis://")


@pytest.mark.parametrize("command", ["api", "worker", "exporter"])
def test_redis_to_a_tls_port_is_refused_in_one_line(
    command: str, tmp_path: Path, servers: Servers
) -> None:
    env = {"REDIS_URL": f"redis://localhost:{servers.tls.tls_port}/0"}
    _assert_refused(command, env, tmp_path, "expects TLS: use rediss://")


def test_worker_refuses_each_tls_misconfiguration_in_one_line(
    tmp_path: Path, servers: Servers
) -> None:
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("this is no certificate\n")
    cases = {
        "REDIS_TLS_CA_FILE: cannot use": {"REDIS_TLS_CA_FILE": str(not_a_ca)},
        "cannot load the client certificate": {"REDIS_TLS_CERT_FILE": str(tmp_path / "absent")},
        "requires a client certificate": {"REDIS_TLS_CERT_FILE": "", "REDIS_TLS_KEY_FILE": ""},
        "refused the credentials": {"REDIS_URL": servers.tls_url(0).replace(ACL_PASSWORD, "wrong")},
    }
    for expected, overrides in cases.items():
        env = {"REDIS_URL": servers.tls_url(0), **servers.tls_env(), **overrides}
        _assert_refused("worker", {k: v for k, v in env.items() if v}, tmp_path, expected)


def test_a_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", server_names=("redis.internal",), with_ip=False)
    server = TlsRedisServer(data_dir=tmp_path / "redis", pki=pki, auth_clients=False).start()
    try:
        env = {
            "REDIS_URL": f"rediss://localhost:{server.tls_port}/0",
            "REDIS_TLS_CA_FILE": str(pki.ca),
        }
        _assert_refused("worker", env, tmp_path, "Hostname mismatch")
    finally:
        server.stop()


def test_an_unreachable_tls_redis_is_not_a_configuration_error(
    tmp_path: Path, servers: Servers
) -> None:
    """Redis may start after us: the exporter starts and reports Redis down, as before."""
    port = free_port()
    exporter = Proc(
        "exporter",
        trustcard_cmd("exporter", "--port", str(port)),
        {**os.environ, "REDIS_URL": f"rediss://localhost:{free_port()}/0", **servers.tls_env()},
        tmp_path / "exporter.log",
    ).start()
    try:

        def reports_redis_down() -> bool:
            assert exporter.alive(), exporter.log()
            try:
                samples = scrape(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                return False
            return ("trustcard_queue_exporter_redis_up", frozenset()) in samples

        wait_until(reports_redis_down, 30, what="the exporter to serve /metrics")
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert value(samples, "trustcard_queue_exporter_redis_up") == 0
    finally:
        exporter.stop()
