"""Sentinel settings and the options every client builds from them (nothing connects here)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import redis.asyncio.sentinel
import redis.sentinel

from trustcard.api.record_and_publish import RecordAndPublish
from trustcard.api.resources import redis_client
from trustcard.celery_app import create_celery_app
from trustcard.config import ConfigError, Settings, load_settings
from trustcard.redis_clients.connection import sentinel_url, sync_client

SENTINELS = "sentinel-0.sentinel:26379,sentinel-1.sentinel:26379,[fd00::7]:26380"
SENTINEL_ENV = {
    "REDIS_URL": "redis://app@sentinel/0",
    "RESULT_BACKEND_URL": "redis://app@sentinel/3",
    "REDIS_PASSWORD": "p@ss/w:rd",
    "REDIS_SENTINEL_HOSTS": SENTINELS,
    "REDIS_SENTINEL_MASTER_NAME": "mymaster",
    "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
}


def sentinel_settings(**overrides: str) -> Settings:
    return Settings.model_validate({**SENTINEL_ENV, **overrides})


def test_hosts_are_parsed_ipv6_included() -> None:
    assert sentinel_settings().sentinel_hosts == (
        ("sentinel-0.sentinel", 26379),
        ("sentinel-1.sentinel", 26379),
        ("fd00::7", 26380),
    )
    assert Settings().sentinel_hosts == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"REDIS_SENTINEL_HOSTS": "sentinel-0"},
            "REDIS_SENTINEL_HOSTS: 'sentinel-0' is not host:port",
        ),
        ({"REDIS_SENTINEL_HOSTS": "a:26379,b:port"}, "'b:port' is not host:port"),
        ({"REDIS_SENTINEL_HOSTS": "a:26379/0"}, "'a:26379/0' is not host:port"),
        ({"REDIS_SENTINEL_HOSTS": "a:0"}, "'a:0' is not host:port"),
        ({"REDIS_SENTINEL_HOSTS": "a:1", "REDIS_URL": "unix:///run/redis.sock"}, "unix://"),
        ({"REDIS_SENTINEL_MASTER_NAME": ""}, "REDIS_SENTINEL_MASTER_NAME"),
    ],
)
def test_bad_sentinel_settings_raise_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert message in text


def test_sentinel_password_comes_from_the_secrets_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "REDIS_SENTINEL_PASSWORD").write_text("from-file")
    monkeypatch.setenv("TRUSTCARD_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_SENTINEL_HOSTS", "s:26379")
    settings = load_settings()
    assert settings.REDIS_SENTINEL_PASSWORD is not None
    assert settings.REDIS_SENTINEL_PASSWORD.get_secret_value() == "from-file"


def test_kombu_and_celery_urls_name_the_sentinels_with_credentials_and_database() -> None:
    settings = sentinel_settings()
    assert sentinel_url(settings, settings.broker_url) == (
        "sentinel://app:p%40ss%2Fw%3Ard@sentinel-0.sentinel:26379/0;"
        "sentinel://sentinel-1.sentinel:26379/0;sentinel://[fd00::7]:26380/0"
    )
    assert sentinel_url(settings, settings.result_backend_url).endswith("[fd00::7]:26380/3")


def test_celery_uses_the_sentinel_transport_and_backend() -> None:
    app = create_celery_app(sentinel_settings())
    conf = app.conf
    assert conf.broker_url.startswith("sentinel://app:")
    assert conf.result_backend.startswith(
        "trustcard.redis_clients.result_backend:TrustcardSentinelBackend+"
    )
    for options in (conf.broker_transport_options, conf.result_backend_transport_options):
        assert options["master_name"] == "mymaster"
        sentinels = options["sentinel_kwargs"]
        assert sentinels["password"] == "sentinel-pw"
        assert sentinels["socket_timeout"] == 5
        assert sentinels["socket_connect_timeout"] == 2
        assert sentinels["socket_keepalive"] is True
        assert "ssl" not in sentinels
    # The existing outage options stay where they were.
    assert conf.broker_transport_options["health_check_interval"] == 10
    assert conf.broker_transport_options["socket_timeout"] == 5
    assert conf.redis_socket_timeout == 5
    connection = app.connection_for_write()
    assert connection.transport_cls == "sentinel"
    assert connection.userid == "app"
    assert connection.password == "p@ss/w:rd"
    assert connection.virtual_host == "0"
    assert [url.split("@")[-1] for url in connection.alt][
        1
    ] == "sentinel://sentinel-1.sentinel:26379/0"
    backend = app.backend
    params = backend.connparams
    assert [(h["host"], h["port"]) for h in params["hosts"]] == list(
        sentinel_settings().sentinel_hosts
    )
    assert params["db"] == 3
    assert params["password"] == "p@ss/w:rd"
    assert params["username"] == "app"


def test_without_sentinels_nothing_changes() -> None:
    conf = create_celery_app(Settings(REDIS_URL="redis://redis:6379/0")).conf
    assert conf.broker_url == "redis://redis:6379/0"
    assert (
        conf.result_backend
        == "trustcard.redis_clients.result_backend:TrustcardRedisBackend+redis://redis:6379/1"
    )
    assert "master_name" not in conf.broker_transport_options
    assert "master_name" not in conf.result_backend_transport_options


def test_tls_reaches_sentinels_and_master() -> None:
    settings = sentinel_settings(
        REDIS_URL="rediss://app@sentinel/0",
        RESULT_BACKEND_URL="rediss://app@sentinel/1",
        REDIS_TLS_CA_FILE="/run/tls/ca.crt",
    )
    conf = create_celery_app(settings).conf
    assert conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert conf.redis_backend_use_ssl["ssl_ca_certs"] == "/run/tls/ca.crt"
    for options in (conf.broker_transport_options, conf.result_backend_transport_options):
        sentinels = options["sentinel_kwargs"]
        assert sentinels["ssl"] is True
        assert sentinels["ssl_ca_certs"] == "/run/tls/ca.crt"
        assert sentinels["ssl_check_hostname"] is True
    client = sync_client(settings, settings.broker_url, socket_timeout=2)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert issubclass(pool.connection_class, redis.SSLConnection)
    assert pool.connection_kwargs["ssl_ca_certs"] == "/run/tls/ca.crt"
    sentinel_pool = pool.sentinel_manager.sentinels[0].connection_pool
    assert issubclass(sentinel_pool.connection_class, redis.SSLConnection)


def test_sync_client_asks_the_sentinels_for_the_master() -> None:
    settings = sentinel_settings()
    client = sync_client(settings, settings.result_backend_url, socket_timeout=2)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "p@ss/w:rd", 3)
    assert kwargs["socket_timeout"] == 2
    assert "host" not in kwargs
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["host"] for s in sentinels] == [
        "sentinel-0.sentinel",
        "sentinel-1.sentinel",
        "fd00::7",
    ]
    for sentinel in sentinels:
        assert sentinel.connection_pool.connection_kwargs["password"] == "sentinel-pw"
        assert sentinel.connection_pool.connection_kwargs["socket_timeout"] == 2


def test_api_clients_share_one_script_on_one_master_only() -> None:
    settings = sentinel_settings()

    async def build() -> None:
        broker = redis_client(settings, settings.broker_url, 1.5)
        backend = redis_client(settings, settings.result_backend_url, 1.5)
        assert isinstance(broker.connection_pool, redis.asyncio.sentinel.SentinelConnectionPool)
        combined = RecordAndPublish.for_clients(broker, backend)
        assert combined is not None
        assert (combined.broker_db, combined.record_db) == (0, 3)
        other = redis_client(
            sentinel_settings(REDIS_SENTINEL_MASTER_NAME="other"), settings.result_backend_url, 1
        )
        assert RecordAndPublish.for_clients(broker, other) is None
        for client in (broker, backend, other):
            await client.aclose()

    asyncio.run(build())
