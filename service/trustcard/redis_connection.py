"""How every Redis client of the service connects: the one place TLS options come from Settings.

The Celery broker (kombu) and result backend, the API's asyncio clients, the queue exporter and
the start-up check all take their connection options here, so a CA bundle or a client
certificate reaches every client at once. `trustcard dev` runs its own plain local Redis and
does not come through here.

A `rediss://` URL turns TLS on; the REDIS_TLS_* settings say how it is verified. Without them
kombu would fall back to no verification at all and Celery's backend would refuse to start
(`A rediss:// URL must have parameter ssl_cert_reqs`).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio

from trustcard.config import Settings


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


def sync_client(settings: Settings, url: str, **options: Any) -> redis.Redis:
    """A redis-py client of `url` (the exporter, start-up checks); `options` are its timeouts."""
    return redis.Redis.from_url(url, **client_options(settings, url), **options)


def async_client(settings: Settings, url: str, **options: Any) -> redis.asyncio.Redis:
    """An asyncio redis-py client of `url` (the API); `options` are its timeouts and retries."""
    return redis.asyncio.Redis.from_url(url, **client_options(settings, url), **options)


def celery_redis_config(settings: Settings, backend_class: str) -> dict[str, Any]:
    """Celery's broker and result-backend URLs with their TLS options.

    `broker_use_ssl` reaches kombu's redis-py connections, `redis_backend_use_ssl` Celery's
    result backend; both only for `rediss://` (set for `redis://`, they would turn TLS on).
    """
    broker, backend = settings.broker_url, settings.result_backend_url
    return {
        "broker_url": broker,
        "result_backend": f"{backend_class}+{backend}",
        "broker_use_ssl": tls_options(settings) if uses_tls(broker) else False,
        "redis_backend_use_ssl": tls_options(settings) if uses_tls(backend) else None,
    }
