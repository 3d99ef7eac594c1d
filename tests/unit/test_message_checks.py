"""Shape checks run on every task message before Celery unpacks it (message_checks.py)."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import InvalidTaskError

from trustcard.celery_app import celery_app
from trustcard.tasks.message_checks import CheckedTask, check_body, check_headers

GOOD_HEADERS = {"id": "5e0c", "task": "test.add"}


@pytest.mark.parametrize(
    "body",
    [[[1, 2], {}, None], [[], {"x": 1}, {"callbacks": None}], ([1], {}, {}), {"args": [1]}],
)
def test_well_formed_bodies_pass(body: Any) -> None:
    check_body(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("just a string", "body must be"),
        (5, "body must be"),
        ([[1, 2], {}], "body must be"),
        ([5, {}, None], "args must be a list"),
        ([[1], [], None], "kwargs must be an object"),
        ([[1], {}, "embed"], "embed"),
        ({"args": "x"}, "args must be a list"),
    ],
)
def test_misshapen_bodies_are_invalid(body: Any, reason: str) -> None:
    with pytest.raises(InvalidTaskError, match=reason):
        check_body(body)


@pytest.mark.parametrize(
    "extra",
    [
        {"eta": "2026-11-28T20:00:00+00:00"},
        {"expires": "2026-11-28T20:00:00Z"},
        {"timelimit": [10, None]},
        {"retries": 2},
    ],
)
def test_usable_headers_pass(extra: dict[str, Any]) -> None:
    check_headers({**GOOD_HEADERS, **extra})


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"id": 7}, "id must be a string"),
        ({"eta": "tomorrow-ish"}, "eta is not an ISO 8601 time"),
        ({"expires": ["x"]}, "expires must be"),
        ({"expires": 1700000000.5}, "expires must be"),
        ({"timelimit": [1, 2, 3]}, "timelimit"),
        ({"timelimit": ["a", None]}, "timelimit"),
        ({"retries": "3"}, "retries"),
        ({"retries": True}, "retries"),
    ],
)
def test_unusable_headers_are_invalid(extra: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidTaskError, match=reason):
        check_headers({**GOOD_HEADERS, **extra})


def test_every_registered_task_checks_its_messages() -> None:
    celery_app.loader.import_default_modules()
    ours = [task for name, task in celery_app.tasks.items() if not name.startswith("celery.")]
    assert ours
    assert all(isinstance(task, CheckedTask) for task in ours)
    assert all(task.Request == "trustcard.tasks.request:TrustcardRequest" for task in ours)
