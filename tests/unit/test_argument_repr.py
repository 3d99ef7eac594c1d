"""argument_repr writes exactly what Celery's saferepr writes, for every kind of argument."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import pytest
from celery.utils.saferepr import saferepr

from trustcard.api.argument_repr import argument_repr


class Level(enum.IntEnum):
    LOW = 1


CASES: list[Any] = [
    (),
    [],
    {},
    (1,),
    (1, 2),
    [1, 2.5, None, True],
    ["an-analysis-id"],
    {"x": 1, "y": 2},
    {"seconds": 0.5},
    {"stage_seconds": 2.0, "flag": False, "nothing": None},
    {"message": "deliberate failure"},
    {"message": "it's quoted"},
    {"message": "tab\tand newline\n"},
    {"message": "x" * 2000},
    {"x": float("nan"), "y": float("inf"), "z": -0.0},
    {"big": 10**30},
    {1: "int key"},
    {"nested": {"a": 1}},
    ([1, 2],),
    {"level": Level.LOW},
    {"amount": Decimal("1.5")},
    {"data": b"bytes"},
    {f"k{i}": i for i in range(300)},
]


@pytest.mark.parametrize("value", CASES, ids=[repr(case)[:40] for case in CASES])
@pytest.mark.parametrize("maxlen", [None, 1024, 10])
def test_same_text_as_saferepr(value: Any, maxlen: int | None) -> None:
    assert argument_repr(value, maxlen) == saferepr(value, maxlen)
