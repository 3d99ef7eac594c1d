"""How every Redis client of the service connects: the one place TLS options come from Settings.

The Celery broker (kombu) and result backend, the API's asyncio clients, the queue exporter and
the start-up check all take their connection options here, so a CA bundle or a client
certificate reaches every client at once. `trustcard dev` runs its own plain local Redis and
does not come through here.

A `rediss://` URL turns TLS on; the REDIS_TLS_* settings say how it is verified. Without them
kombu would fall back to no verification at all and Celery's backend would refuse to start
(`A rediss:// URL must have parameter ssl_cert_reqs`).

With REDIS_SENTINEL_HOSTS set every client asks the Sentinels for the master's address on each
new connection (kombu's and Celery's Sentinel classes, redis-py's `Sentinel.master_for`); the
URLs then give scheme, user, password and database only (docs/redis-sentinel.md).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from trustcard.config import Settings
from trustcard.redis_clients.master_switch import (
    AsyncSentinelMasterConnection,
    AsyncSentinelMasterSSLConnection,
)
from trustcard.redis_clients.write_refusal import (
    SentinelMasterConnection,
    SentinelMasterSSLConnection,
)


def uses_tls(url: str) -> bool:
    """True for a `rediss://` URL."""
    return urlsplit(url).scheme == "rediss"


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's `ssl_*` arguments (also what kombu and Celery pass on to redis-py)."""
    verify = settings.REDIS_TLS_VERIFY
    return {
        "ssl_cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
        # Verify-full: the certificate must name the host of the URL.
        "ssl_check_hostname": verify,
        # None: the system's CA store (managed Redis with a public CA).
        "ssl_ca_certs": settings.REDIS_TLS_CA_FILE,
        # Mutual TLS, when the server asks for a client certificate.
        "ssl_certfile": settings.REDIS_TLS_CERT_FILE,
        "ssl_keyfile": settings.REDIS_TLS_KEY_FILE,
    }


def client_options(settings: Settings, url: str) -> dict[str, Any]:
    """Connection arguments every redis-py client of `url` gets; the caller adds its timeouts."""
    return tls_options(settings) if uses_tls(url) else {}


def sentinel_kwargs(settings: Settings, url: str, **socket_options: Any) -> dict[str, Any]:
    """How clients connect to the Sentinels themselves: their password, TLS, the timeouts.

    Given explicitly: redis-py copies only `socket_*` options when none are given, and Celery's
    backend passes `{}` (celery/backends/redis.py:1166), which leaves Sentinel connections
    without any timeout: a frozen Sentinel would hang every new connection for good.
    """
    password = settings.REDIS_SENTINEL_PASSWORD
    tls = {"ssl": True, **tls_options(settings)} if uses_tls(url) else {}
    return {
        **({"password": password.get_secret_value()} if password is not None else {}),
        **tls,
        **socket_options,
    }


def master_options(settings: Settings, url: str) -> dict[str, Any]:
    """The master's credentials, database and TLS from `url` (its host:port is not used)."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/")
    return {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
        "db": int(db) if db else 0,
        # `ssl` makes redis-py's Sentinel pool use its TLS connection class.
        **({"ssl": True, **tls_options(settings)} if uses_tls(url) else {}),
    }


SOCKET_OPTION_PREFIXES = ("socket_", "retry")


def _sentinel_socket_options(options: dict[str, Any]) -> dict[str, Any]:
    """The caller's timeouts (and retry) apply to the Sentinel connections as well."""
    return {k: v for k, v in options.items() if k.startswith(SOCKET_OPTION_PREFIXES)}


def sync_client(settings: Settings, url: str, **options: Any) -> redis.Redis:
    """A redis-py client of `url` (the exporter, start-up checks); `options` are its timeouts."""
    if settings.sentinel_hosts:
        sentinel = redis.sentinel.Sentinel(
            list(settings.sentinel_hosts),
            sentinel_kwargs=sentinel_kwargs(settings, url, **_sentinel_socket_options(options)),
        )
        master = {**master_options(settings, url), **options}
        # Follows a master switch at once (redis_clients.master_switch).
        master["connection_class"] = (
            SentinelMasterSSLConnection if uses_tls(url) else SentinelMasterConnection
        )
        client: redis.Redis = sentinel.master_for(settings.REDIS_SENTINEL_MASTER_NAME, **master)
        return client
    return redis.Redis.from_url(url, **client_options(settings, url), **options)


def async_client(settings: Settings, url: str, **options: Any) -> redis.asyncio.Redis:
    """An asyncio redis-py client of `url` (the API); `options` are its timeouts and retries."""
    if settings.sentinel_hosts:
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(settings.sentinel_hosts),
            sentinel_kwargs=sentinel_kwargs(settings, url, **_sentinel_socket_options(options)),
        )
        master = {**master_options(settings, url), **options}
        master["connection_class"] = (
            AsyncSentinelMasterSSLConnection if uses_tls(url) else AsyncSentinelMasterConnection
        )
        aclient: redis.asyncio.Redis = sentinel.master_for(
            settings.REDIS_SENTINEL_MASTER_NAME, **master
        )
        return aclient
    return redis.asyncio.Redis.from_url(url, **client_options(settings, url), **options)


def sentinel_url(settings: Settings, url: str) -> str:
    """kombu's and Celery's form: `sentinel://user:pass@s1:26379/db;sentinel://s2:26379/db`.

    Both read credentials and database from the first entry, the others for their address.
    """
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    db = parts.path.lstrip("/") or "0"
    entries = []
    for index, (host, port) in enumerate(settings.sentinel_hosts):
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        auth = f"{userinfo}@" if userinfo and index == 0 else ""
        entries.append(f"sentinel://{auth}{address}/{db}")
    return ";".join(entries)


def sentinel_transport_options(settings: Settings, **socket_options: Any) -> dict[str, Any]:
    """Transport options of kombu's Sentinel channel and Celery's Sentinel backend ({} without).

    `socket_options` are the Sentinel connections' timeouts (see sentinel_kwargs).
    """
    if not settings.sentinel_hosts:
        return {}
    return {
        "master_name": settings.REDIS_SENTINEL_MASTER_NAME,
        "sentinel_kwargs": sentinel_kwargs(settings, settings.broker_url, **socket_options),
    }


def celery_redis_config(
    settings: Settings, backend_class: str, sentinel_backend_class: str
) -> dict[str, Any]:
    """Celery's broker and result-backend URLs with their TLS options.

    `broker_use_ssl` reaches kombu's redis-py connections, `redis_backend_use_ssl` Celery's
    result backend; both only for `rediss://` (set for `redis://`, they would turn TLS on).
    With Sentinels the URLs name them (`sentinel://`) and the backend is `sentinel_backend_class`.
    """
    broker, backend = settings.broker_url, settings.result_backend_url
    broker_target, backend_target = broker, backend
    if settings.sentinel_hosts:
        broker_target = sentinel_url(settings, broker)
        backend_target = sentinel_url(settings, backend)
        backend_class = sentinel_backend_class
    return {
        "broker_url": broker_target,
        "result_backend": f"{backend_class}+{backend_target}",
        "broker_use_ssl": tls_options(settings) if uses_tls(broker) else False,
        "redis_backend_use_ssl": tls_options(settings) if uses_tls(backend) else None,
    }
