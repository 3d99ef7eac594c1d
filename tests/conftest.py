"""Session-wide real processes: one redis-server, one worker, one API (on free ports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import ServiceStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    service = ServiceStack(workdir=Path(tmp_path_factory.mktemp("stack")))
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture
def client(stack: ServiceStack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http
