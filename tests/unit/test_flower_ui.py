"""`trustcard flower`'s options and credentials, and the task-events setting, without Flower."""

from __future__ import annotations

import pytest

from trustcard.celery_app import celery_config
from trustcard.config import ConfigError, Settings
from trustcard.flower_ui import FlowerOptions, flower_args, flower_auth_env


def test_task_events_are_off_by_default_and_one_setting_turns_both_sides_on() -> None:
    off = celery_config(Settings())
    assert off["worker_send_task_events"] is False
    assert off["task_send_sent_event"] is False
    on = celery_config(Settings(WORKER_SEND_TASK_EVENTS=True))
    assert on["worker_send_task_events"] is True
    assert on["task_send_sent_event"] is True


def test_flower_never_switches_events_on_and_logs_through_our_handler() -> None:
    args = flower_args(FlowerOptions())
    assert "--enable_events=False" in args
    assert "--logging=none" in args
    assert "--read_only=True" in args
    assert not [a for a in args if a.startswith(("--url_prefix", "--persistent", "--db"))]


def test_prefix_and_state_file() -> None:
    args = flower_args(
        FlowerOptions(url_prefix="/ops/flower/", state_file="/data/f", read_only=False)
    )
    assert "--url_prefix=ops/flower" in args
    assert "--persistent=True" in args
    assert "--db=/data/f" in args
    assert "--read_only=False" in args


def test_basic_auth_pairs_are_passed_on_trimmed() -> None:
    settings = Settings(FLOWER_BASIC_AUTH=" ops:pw1 , admin:pw:with:colons ,")
    assert flower_auth_env(settings, no_auth=False) == {
        "FLOWER_BASIC_AUTH": "ops:pw1,admin:pw:with:colons"
    }


@pytest.mark.parametrize(
    ("secret", "no_auth", "message"),
    [
        (None, False, "FLOWER_BASIC_AUTH is not set"),
        ("ops:pw", True, "choose one"),
        ("ops", False, "must be user:password"),
        (":pw", False, "must be user:password"),
        ("ops:", False, "must be user:password"),
        (" , ", False, "is empty"),
    ],
)
def test_bad_or_missing_credentials_are_refused(
    secret: str | None, no_auth: bool, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        flower_auth_env(Settings(FLOWER_BASIC_AUTH=secret), no_auth=no_auth)


def test_no_auth_opens_flowers_api_explicitly() -> None:
    assert flower_auth_env(Settings(), no_auth=True) == {"FLOWER_UNAUTHENTICATED_API": "true"}
