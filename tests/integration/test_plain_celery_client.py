"""A plain Celery client that does not import trustcard sends tasks by name and gets results."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from tests.stack import ServiceStack


@pytest.fixture
def plain_client(stack: ServiceStack) -> Iterator[Celery]:
    assert stack.redis is not None
    app = Celery("outsider", broker=stack.redis.url(0), backend=stack.redis.url(1))
    yield app
    app.close()


def test_add_by_name_on_queue_analysis(plain_client: Celery) -> None:
    result = plain_client.send_task("test.add", args=(20, 22), queue="analysis")
    assert result.get(timeout=15) == 42


def test_long_task_by_name_reports_stages(plain_client: Celery) -> None:
    result = plain_client.send_task("test.long_task", kwargs={"stage_seconds": 0}, queue="analysis")
    outcome = result.get(timeout=15)
    assert [stage["index"] for stage in outcome["stages"]] == [1, 2, 3, 4, 5]


def test_bad_arguments_fail_in_the_task(plain_client: Celery) -> None:
    result = plain_client.send_task("test.add", args=("a", 1), queue="analysis")
    with pytest.raises(Exception, match="x must be a number"):
        result.get(timeout=15)
    sleeper = plain_client.send_task("test.sleep", args=(10**6,), queue="analysis")
    with pytest.raises(Exception, match="between 0 and 60"):
        sleeper.get(timeout=15)
