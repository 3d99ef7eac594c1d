"""Every Redis client takes its TLS options from one place (trustcard.redis_clients.connection)."""

from __future__ import annotations

import ssl

from trustcard.celery_app import create_celery_app
from trustcard.config import Settings
from trustcard.redis_clients.connection import async_client, client_options, sync_client

TLS = {
    "REDIS_URL": "rediss://app:pw@redis.internal:6380/0",
    "REDIS_TLS_CA_FILE": "/run/tls/ca.crt",
    "REDIS_TLS_CERT_FILE": "/run/tls/tls.crt",
    "REDIS_TLS_KEY_FILE": "/run/tls/tls.key",
}


def test_verification_is_on_by_default() -> None:
    options = client_options(Settings(REDIS_URL="rediss://redis:6380/0"), "rediss://redis:6380/0")
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert options["ssl_check_hostname"] is True
    assert options["ssl_ca_certs"] is None  # the system's CA store


def test_plain_urls_get_no_tls_options() -> None:
    settings = Settings.model_validate({**TLS, "REDIS_URL": "redis://redis:6379/0"})
    assert client_options(settings, settings.broker_url) == {}
    conf = create_celery_app(settings).conf
    assert not conf.broker_use_ssl
    assert not conf.redis_backend_use_ssl


def test_celery_broker_and_backend_get_the_tls_settings() -> None:
    app = create_celery_app(Settings.model_validate(TLS))
    # kombu hands `ssl` to its redis-py pool; the backend's parameters are its pool's.
    broker = app.connection_for_write().ssl
    backend = app.backend.connparams
    for effective in (broker, backend):
        assert effective["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert effective["ssl_check_hostname"] is True
        assert effective["ssl_ca_certs"] == "/run/tls/ca.crt"
        assert effective["ssl_certfile"] == "/run/tls/tls.crt"
        assert effective["ssl_keyfile"] == "/run/tls/tls.key"
    assert (backend["username"], backend["db"]) == ("app", 1)


def test_redis_py_clients_carry_the_same_options() -> None:
    settings = Settings.model_validate({**TLS, "REDIS_TLS_VERIFY": "false"})
    for client in (
        sync_client(settings, settings.broker_url),
        async_client(settings, settings.result_backend_url),
    ):
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == ssl.CERT_NONE
        assert kwargs["ssl_check_hostname"] is False
        assert kwargs["ssl_ca_certs"] == "/run/tls/ca.crt"
        assert kwargs["username"] == "app"
