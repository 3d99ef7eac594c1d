"""The API at its edge (issue 15), on real `trustcard api` processes and a real Redis.

Client identity behind proxies, rate limits shared by replicas, the failed-auth limit, no
redirects, no 500 on hostile bodies, and slow-header clients cut off.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import Proc, ServiceStack, trustcard_cmd, wait_until
from trustcard.local.redis_server import free_port

pytestmark = pytest.mark.integration

KEY = "edge-key-0123456789"
UNKNOWN_TASK = "/tasks/00000000-0000-0000-0000-000000000000"
POST = "https://www.instagram.com/p/C0dE1234567/"


def start_second_api(stack: ServiceStack, name: str, **env: str) -> tuple[Proc, str]:
    """Another `trustcard api` on the same Redis (a second replica), with `env` on top."""
    port = free_port()
    proc = Proc(
        name,
        trustcard_cmd("api", "--port", str(port)),
        {**stack.env(), **env},
        stack.workdir / f"{name}.log",
    ).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.alive(), proc.log()[-3000:]
        try:
            return httpx.get(url + "/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 30, what=f"{name} to answer")
    return proc, url


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """Keys off (as `trustcard dev`), limited per address: 4 requests per 2 s."""
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("edge-open")),
        with_worker=False,
        env_overrides={
            "RATE_LIMIT_PER_SECOND": "2",
            "RATE_LIMIT_BURST": "4",
            "HEADER_READ_TIMEOUT_SECONDS": "2",
        },
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    stack = ServiceStack(
        workdir=Path(tmp_path_factory.mktemp("edge-keyed")),
        with_worker=False,
        env_overrides={
            "API_KEYS": KEY,
            "RATE_LIMIT_PER_SECOND": "3",
            "RATE_LIMIT_BURST": "6",
            "AUTH_FAILURES_PER_MINUTE": "20",
        },
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_spoofed_forwarded_for_does_not_escape_the_limit(open_stack: ServiceStack) -> None:
    """No trusted proxies: rotating X-Forwarded-For is ignored, the peer's bucket runs out."""
    with open_stack.client() as client:
        codes = [
            client.get(UNKNOWN_TASK, headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
            for n in range(12)
        ]
    assert 429 in codes, codes


def test_trusted_proxy_gives_each_real_client_its_own_limit(open_stack: ServiceStack) -> None:
    """Behind a trusted proxy, X-Forwarded-For is the client: its own bucket, its own log line."""
    proc, url = start_second_api(open_stack, "api-behind-proxy", TRUSTED_PROXIES="127.0.0.1")
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            first = {"X-Forwarded-For": "203.0.113.7"}
            codes = [client.get(UNKNOWN_TASK, headers=first).status_code for _ in range(10)]
            assert 429 in codes, codes
            other = client.get(UNKNOWN_TASK, headers={"X-Forwarded-For": "203.0.113.8"})
            assert other.status_code == 404, other.text
        wait_until(lambda: "203.0.113.7" in proc.log(), 10, what="the real client in the log")
    finally:
        proc.stop()


def test_no_redirect_for_a_missing_trailing_slash(open_stack: ServiceStack) -> None:
    time.sleep(2.5)  # a fresh window for this address
    with open_stack.client() as client:
        for path in ("/tasks?limit=5", "/claims/", "/analysis/posts/"):
            response = client.get(path, follow_redirects=False)
            assert response.status_code not in (301, 302, 307, 308), (path, response.headers)
            assert response.status_code in (200, 404, 503), (path, response.text)


@pytest.mark.parametrize(
    "body",
    [
        b'{"url": "' + POST.encode() + b'", "force": 1e999999}',
        b'{"url": "https://www.instagram.com/p/\\ud800abcde/"}',
        b'{"url": "' + POST.encode() + b'", "force": -1e999999}',
        b'{"url": "' + POST.encode() + b'", "content": {"caption": "\\udfff"}}',
    ],
    ids=["huge-float", "lone-surrogate-url", "huge-negative-float", "lone-surrogate-caption"],
)
def test_hostile_bodies_are_4xx_not_500(open_stack: ServiceStack, body: bytes) -> None:
    time.sleep(0.6)  # stay under this address's 2/s
    with open_stack.client() as client:
        response = client.post(
            "/analysis/posts", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code in (400, 413, 422), response.text
    assert response.json()["detail"]


def test_many_keys_are_answered_quickly_without_echoing_them(open_stack: ServiceStack) -> None:
    """~1 MB of 80k unknown keys: a bounded 422, not the whole body echoed back."""
    members = (f'"k{n}":1' for n in range(80_000))
    body = ("{" + ",".join(members) + "}").encode()
    assert len(body) < 1_048_576
    time.sleep(2.5)
    with open_stack.client() as client:
        started = time.monotonic()
        response = client.post(
            "/analysis/posts", content=body, headers={"Content-Type": "application/json"}
        )
        seconds = time.monotonic() - started
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 10_000
    assert response.json()["more_errors"] > 1000
    assert seconds < 10, seconds


def test_trickling_headers_are_cut(open_stack: ServiceStack) -> None:
    """A client sending one header byte every 0.3 s is disconnected after ~2 s, not served."""
    with socket.create_connection(("127.0.0.1", open_stack.api_port), timeout=5) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        for byte in b"X-Slow: " + b"a" * 60:  # bounded: at most ~18 s of trickling
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            sock.settimeout(0.3)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        seconds = time.monotonic() - started
    assert closed, "the server kept a trickling connection open"
    assert seconds < 12, seconds


def test_rate_limit_is_shared_across_replicas(keyed_stack: ServiceStack) -> None:
    """One key alternating between two API processes gets one budget (6 per 2 s), not two."""
    proc, second_url = start_second_api(keyed_stack, "api-replica")
    try:
        headers = {"X-API-Key": KEY}
        codes = []
        with (
            httpx.Client(base_url=keyed_stack.base_url, timeout=10, headers=headers) as one,
            httpx.Client(base_url=second_url, timeout=10, headers=headers) as two,
        ):
            for _ in range(6):
                codes += [one.get(UNKNOWN_TASK).status_code, two.get(UNKNOWN_TASK).status_code]
        assert codes.count(404) <= 8, codes  # 6 per window, one window boundary at most
        assert 429 in codes, codes
    finally:
        proc.stop()


def test_failed_authentication_is_limited_per_address(keyed_stack: ServiceStack) -> None:
    time.sleep(2.5)
    with keyed_stack.client() as client:
        codes = [
            client.get(UNKNOWN_TASK, headers={"X-API-Key": f"guess-{n}"}).status_code
            for n in range(40)
        ]
        assert codes[:20] == [401] * 20, codes
        assert set(codes[20:]) == {429}, codes
        # While blocked, even the right key is not compared (no oracle for a guesser).
        blocked = client.get(UNKNOWN_TASK, headers={"X-API-Key": KEY})
    assert blocked.status_code == 429
    assert "failed authentications" in blocked.json()["detail"]
    assert int(blocked.headers["retry-after"]) >= 1


def test_validation_errors_stay_json(open_stack: ServiceStack) -> None:
    time.sleep(0.6)
    with open_stack.client() as client:
        response = client.post("/analysis/posts", content=b"{not json")
    assert response.status_code == 422
    json.dumps(response.json())
