"""Start-up check of the Redis connection settings: a misconfiguration is one line, not a hang.

`trustcard api`, `worker` and `exporter` run it before they start. With Sentinels it also asks
them for the master: none reachable, or none knowing REDIS_SENTINEL_MASTER_NAME, is an error.
Without the check a wrong CA or a `rediss://` URL pointing at a plain port shows up as a
traceback deep in kombu, or as a worker that retries the handshake for ever. A Redis that is
merely not up yet is no error: Celery and the API reconnect by themselves (on Kubernetes,
Redis may start after us).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from trustcard.config import ConfigError, Settings
from trustcard.redis_clients.connection import sentinel_kwargs, sync_client, uses_tls

# Bounds of each attempt: start-up fails (or goes on) within a few seconds.
CONNECT_SECONDS = 3.0
PROBE_SECONDS = 2.0


def check_tls_files(settings: Settings) -> None:
    """Load the CA bundle and client certificate as the clients will; ConfigError if unusable."""
    context = ssl.create_default_context()
    ca = settings.REDIS_TLS_CA_FILE
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            message = f"REDIS_TLS_CA_FILE: cannot use {ca} as a CA bundle ({exc})"
            raise ConfigError(message) from None
    cert, key = settings.REDIS_TLS_CERT_FILE, settings.REDIS_TLS_KEY_FILE
    if cert:
        try:
            context.load_cert_chain(certfile=cert, keyfile=key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE: cannot load the client certificate "
                f"{cert} with key {key or '(in the same file)'} ({exc})"
            ) from None
    elif key:
        raise ConfigError("REDIS_TLS_KEY_FILE is set without REDIS_TLS_CERT_FILE")


def check_redis(settings: Settings) -> None:
    """Connect to the broker's and the result backend's Redis once; ConfigError on a setup error.

    Unreachable is fine (returns); refused TLS, a TLS/non-TLS mismatch or refused credentials
    are not: they will never heal by retrying.
    """
    urls = {"REDIS_URL": settings.broker_url, "RESULT_BACKEND_URL": settings.result_backend_url}
    if any(uses_tls(url) for url in urls.values()):
        check_tls_files(settings)
    if settings.sentinel_hosts:
        check_sentinels(settings)
    seen: set[tuple[str | int | None, ...]] = set()
    for name, url in urls.items():
        parts = urlsplit(url)
        # Behind Sentinels both URLs reach the one master: its credentials are what differs.
        server = (
            (parts.scheme, parts.hostname, parts.port)
            if not settings.sentinel_hosts
            else (parts.scheme, parts.username, parts.password)
        )
        if server in seen:
            continue
        seen.add(server)
        problem = _connection_problem(settings, url)
        if problem:
            raise ConfigError(f"{name}: {problem}")


def check_sentinels(settings: Settings) -> None:
    """At least one Sentinel answers and knows REDIS_SENTINEL_MASTER_NAME; ConfigError if not.

    Stricter than a plain Redis that is not up yet: without a Sentinel the clients cannot even
    find out where to connect, and an unknown master name never heals by retrying.
    """
    name = settings.REDIS_SENTINEL_MASTER_NAME
    errors: list[str] = []
    answered: list[str] = []
    for host, port in settings.sentinel_hosts:
        where = f"{host}:{port}"
        client = redis.Redis(
            host=host,
            port=port,
            **sentinel_kwargs(
                settings,
                settings.broker_url,
                socket_connect_timeout=CONNECT_SECONDS,
                socket_timeout=CONNECT_SECONDS,
            ),
            retry=Retry(NoBackoff(), retries=0),
        )
        try:
            address = client.sentinel_get_master_addr_by_name(name)
        except redis.AuthenticationError as exc:
            raise ConfigError(
                f"REDIS_SENTINEL_PASSWORD: Sentinel {where} refused the credentials ({exc})"
            ) from None
        except redis.ResponseError as exc:
            if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise ConfigError(
                    f"REDIS_SENTINEL_PASSWORD: Sentinel {where} refused the credentials ({exc})"
                ) from None
            errors.append(f"{where}: {exc}")
            continue
        except redis.RedisError as exc:
            tls_problem = (
                _diagnose(settings, f"rediss://{where}", exc)
                if uses_tls(settings.broker_url)
                else None
            )
            if tls_problem:
                raise ConfigError(f"REDIS_SENTINEL_HOSTS: {tls_problem}") from None
            errors.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        finally:
            client.close()
        if address:
            return
        answered.append(where)
    if answered:
        raise ConfigError(
            f"REDIS_SENTINEL_MASTER_NAME: no Sentinel monitors a master named {name!r} "
            f"(asked {', '.join(answered)})"
        )
    raise ConfigError("REDIS_SENTINEL_HOSTS: no Sentinel reachable (" + "; ".join(errors) + ")")


def _connection_problem(settings: Settings, url: str) -> str | None:
    client = sync_client(
        settings,
        url,
        socket_connect_timeout=CONNECT_SECONDS,
        socket_timeout=CONNECT_SECONDS,
        retry=Retry(NoBackoff(), retries=0),
    )
    where = _where(url)
    if settings.sentinel_hosts:
        where = f"the master {settings.REDIS_SENTINEL_MASTER_NAME!r} (from the Sentinels)"
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        return f"Redis at {where} refused the credentials ({exc})"
    except redis.ResponseError as exc:
        if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            return f"Redis at {where} refused the credentials ({exc})"
        return None
    except redis.RedisError as exc:
        if settings.sentinel_hosts:
            # The Sentinels answered (check_sentinels): a master down now is a failover under
            # way, and TLS to the Sentinels worked already.
            return None
        return _diagnose(settings, url, exc)
    finally:
        client.close()
    return None


def _diagnose(settings: Settings, url: str, exc: BaseException) -> str | None:
    """A readable line for errors retrying cannot fix; None for "not reachable (yet)"."""
    where = _where(url)
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the TLS certificate of {where} failed verification: {cause.verify_message} "
                "(check REDIS_TLS_CA_FILE and that the certificate names this host)"
            )
        # TLS 1.3 servers refuse a missing client certificate after the handshake: an alert,
        # or just the end of the connection.
        missing_cert = "CERTIFICATE_REQUIRED" in str(cause) or isinstance(cause, ssl.SSLEOFError)
        if missing_cert and not settings.REDIS_TLS_CERT_FILE:
            return (
                f"{where} ended the TLS session: it likely requires a client certificate "
                "(set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)"
            )
    parts = urlsplit(url)
    if parts.scheme == "rediss" and _speaks_plain_redis(parts.hostname, parts.port):
        return f"{where} serves plain Redis without TLS: use redis://, or the server's TLS port"
    if parts.scheme == "redis" and _speaks_tls(parts.hostname, parts.port):
        return f"{where} expects TLS: use rediss:// (and REDIS_TLS_CA_FILE for a private CA)"
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError):
            return f"TLS with {where} failed: {cause}"
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def _speaks_plain_redis(host: str | None, port: int | None) -> bool:
    """True if host:port answers a plain-text PING with a Redis reply (+PONG, -NOAUTH ...)."""
    try:
        with socket.create_connection((host or "localhost", port or 6379), PROBE_SECONDS) as sock:
            sock.settimeout(PROBE_SECONDS)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply[:1] in (b"+", b"-")


def _speaks_tls(host: str | None, port: int | None) -> bool:
    """True if host:port completes (or answers) a TLS handshake; certificates not checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host or "localhost", port or 6379), PROBE_SECONDS) as sock:
            sock.settimeout(PROBE_SECONDS)
            with context.wrap_socket(sock, server_hostname=host):
                return True
    except ssl.SSLError as exc:
        # The server spoke TLS and refused us (e.g. it wants a client certificate).
        return "ALERT" in str(exc).upper()
    except OSError:
        return False
