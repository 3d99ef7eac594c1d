"""Settings: defaults, derived URLs, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from trustcard.config import (
    ConfigError,
    Settings,
    describe_validation_error,
    load_settings,
    redact_url,
)


def test_defaults_match_the_seed() -> None:
    settings = Settings()
    assert settings.TASK_TIME_LIMIT == 300
    assert settings.TASK_SOFT_TIME_LIMIT == 240
    assert settings.WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.WORKER_MAX_TASKS_PER_CHILD == 50
    assert settings.BROKER_VISIBILITY_TIMEOUT > settings.TASK_TIME_LIMIT
    assert settings.REDIS_URL.endswith("/0")


@pytest.mark.parametrize(
    ("broker", "backend"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/1"),
        ("redis://:s3cret@redis.ns.svc:6380/0", "redis://:s3cret@redis.ns.svc:6380/1"),
        ("rediss://cache.example:6379", "rediss://cache.example:6379/1"),
    ],
)
def test_result_backend_defaults_to_db_1_of_the_broker(broker: str, backend: str) -> None:
    assert Settings(REDIS_URL=broker).result_backend_url == backend


def test_explicit_result_backend_wins() -> None:
    settings = Settings(RESULT_BACKEND_URL="redis://other:6379/5")
    assert settings.result_backend_url == "redis://other:6379/5"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TASK_SOFT_TIME_LIMIT": "300"}, "TASK_SOFT_TIME_LIMIT (300) must be lower than"),
        ({"TASK_TIME_LIMIT": "0"}, "TASK_TIME_LIMIT: Input should be greater than 0"),
        ({"WORKER_PREFETCH_MULTIPLIER": "0"}, "WORKER_PREFETCH_MULTIPLIER"),
        ({"WORKER_CONCURRENCY": "zero"}, "WORKER_CONCURRENCY"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL: must start with one of"),
        ({"RESULT_BACKEND_URL": "redis://:6379/1"}, "RESULT_BACKEND_URL: has no host"),
        ({"REDIS_URL": "redis://h/zero"}, "database must be a number"),
        ({"ENABLE_TEST_ENDPOINTS": "maybe"}, "ENABLE_TEST_ENDPOINTS"),
    ],
)
def test_bad_values_raise_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("invalid configuration: ")
    assert message in text


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_MAX_TASKS_PER_CHILD", "0")
    monkeypatch.setenv("ENABLE_TEST_ENDPOINTS", "false")
    settings = load_settings()
    assert settings.WORKER_MAX_TASKS_PER_CHILD == 0
    assert settings.ENABLE_TEST_ENDPOINTS is False


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h/0", "redis://user:***@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_password_is_inserted_url_encoded_into_both_urls() -> None:
    settings = Settings(REDIS_URL="redis://redis-0.redis:6379/0", REDIS_PASSWORD="p@ss/w:rd")
    assert settings.broker_url == "redis://:p%40ss%2Fw%3Ard@redis-0.redis:6379/0"
    assert settings.result_backend_url == "redis://:p%40ss%2Fw%3Ard@redis-0.redis:6379/1"
    assert "p@ss" not in repr(settings)


def test_password_in_the_url_wins() -> None:
    settings = Settings(REDIS_URL="redis://:inline@h:6379/0", REDIS_PASSWORD="other")
    assert settings.broker_url == "redis://:inline@h:6379/0"


def test_secrets_come_from_a_mounted_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "REDIS_PASSWORD").write_text("from-file")
    (tmp_path / "REDIS_URL").write_text("redis://r:6379/0")
    monkeypatch.setenv("TRUSTCARD_SECRETS_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.broker_url == "redis://:from-file@r:6379/0"
    assert settings.result_backend_url == "redis://:from-file@r:6379/1"


def test_password_goes_after_an_acl_user_name_in_the_url() -> None:
    settings = Settings(REDIS_URL="rediss://trust%40card@redis:6380/0", REDIS_PASSWORD="p@ss")
    assert settings.broker_url == "rediss://trust%40card:p%40ss@redis:6380/0"
    assert settings.result_backend_url == "rediss://trust%40card:p%40ss@redis:6380/1"


def test_tls_options_in_the_url_are_refused_readably() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(REDIS_URL="rediss://redis:6380/0?ssl_cert_reqs=none")
    assert "REDIS_TLS_* settings" in describe_validation_error(refused.value)
