"""soft_time_limit_deferred: a soft limit arriving during a final-state write is logged, not
raised, only where billiard's soft-limit handler is installed (a pool child). Real signals."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator

import pytest
from billiard import pool as billiard_pool
from billiard.exceptions import SoftTimeLimitExceeded

from trustcard.redis_clients.result_backend import soft_time_limit_deferred

SOFT = billiard_pool.SIG_SOFT_TIMEOUT


@pytest.fixture
def pool_child_handler() -> Iterator[None]:
    """Install billiard's soft-limit handler, as billiard does in each pool child."""
    assert SOFT is not None
    previous = signal.signal(SOFT, billiard_pool.soft_timeout_sighandler)
    try:
        yield
    finally:
        signal.signal(SOFT, previous)


def _soft_limit_now() -> None:
    assert SOFT is not None
    os.kill(os.getpid(), SOFT)


def test_soft_limit_during_the_write_is_logged_not_raised(
    pool_child_handler: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), soft_time_limit_deferred("t-1", "SUCCESS"):
        _soft_limit_now()
    assert "t-1 reached its soft time limit while storing its SUCCESS state" in caplog.text
    # billiard's handler is back: outside the write the soft limit raises again.
    assert signal.getsignal(SOFT) is billiard_pool.soft_timeout_sighandler
    with pytest.raises(SoftTimeLimitExceeded):
        _soft_limit_now()


def test_handler_is_restored_when_the_write_fails(pool_child_handler: None) -> None:
    with pytest.raises(ConnectionError), soft_time_limit_deferred("t-2", "FAILURE"):
        raise ConnectionError("Redis is away")
    assert signal.getsignal(SOFT) is billiard_pool.soft_timeout_sighandler


def test_outside_a_pool_child_nothing_changes() -> None:
    before = signal.getsignal(SOFT)  # the test process has no soft-limit handler
    assert before is not billiard_pool.soft_timeout_sighandler
    with soft_time_limit_deferred("t-3", "SUCCESS"):
        assert signal.getsignal(SOFT) is before
