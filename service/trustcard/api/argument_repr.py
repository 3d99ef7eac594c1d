"""Celery's `saferepr` of a task's arguments, without its token stream for flat ones.

Every message carries `argsrepr` and `kwargsrepr` (for Flower and the worker's log), which
Celery builds with `saferepr`: a generator of tokens that costs ~40-60 µs even for `()` and
`{'x': 1, 'y': 2}`, 2-6 % of a submission's CPU in the API's profile. For flat arguments (a
tuple, list or dict of numbers, None and strings without a quote) the result is plain string
formatting; for anything else, or anything longer than the limit, `saferepr` itself answers.
The text is the same either way (a unit test compares them), so the message bytes are Celery's.
"""

from __future__ import annotations

from typing import Any

from celery.app import amqp
from celery.utils.saferepr import saferepr

# Exact types (not subclasses: an IntEnum's repr differs) that saferepr writes as str(value).
_NUMBERS = frozenset({int, float, bool})


def argument_repr(
    value: Any, maxlen: int | None = None, maxlevels: int = 3, seen: Any = None
) -> str:
    """saferepr(value, maxlen, maxlevels, seen), formatted directly when the value is flat."""
    text = _flat(value)
    if text is None or (maxlen is not None and len(text) > maxlen):
        return str(saferepr(value, maxlen, maxlevels, seen))
    return text


def use_for_task_messages() -> None:
    """Let Celery's message builder (celery.app.amqp, this process only) use argument_repr."""
    amqp.saferepr = argument_repr


def _flat(value: Any) -> str | None:
    kind = type(value)
    if kind is dict:
        items = []
        for key, item in value.items():
            key_text, item_text = _scalar(key), _scalar(item)
            if type(key) is not str or key_text is None or item_text is None:
                return None
            items.append(f"{key_text}: {item_text}")
        return "{" + ", ".join(items) + "}"
    if kind is tuple or kind is list:
        texts = [_scalar(item) for item in value]
        if None in texts:
            return None
        inner = ", ".join(texts)  # type: ignore[arg-type]
        if kind is list:
            return f"[{inner}]"
        return f"({inner},)" if len(texts) == 1 else f"({inner})"
    return None


def _scalar(value: Any) -> str | None:
    kind = type(value)
    if kind in _NUMBERS:
        return str(value)
    if value is None:
        return "None"
    if kind is str and "'" not in value:
        return f"'{value}'"  # saferepr quotes strings as they are (no escapes)
    return None
