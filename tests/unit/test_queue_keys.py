"""Queue keys follow kombu's layout of priority lists."""

from __future__ import annotations

from kombu.transport.redis import PRIORITY_STEPS, Channel

from trustcard.observability.queue_depth import PRIORITY_SEPARATOR, queue_keys
from trustcard.observability.queue_depth import PRIORITY_STEPS as OUR_STEPS


def test_keys_match_kombus_layout() -> None:
    assert list(OUR_STEPS) == PRIORITY_STEPS
    assert Channel.sep == PRIORITY_SEPARATOR
    assert queue_keys("analysis") == [
        "analysis",
        "analysis\x06\x163",
        "analysis\x06\x166",
        "analysis\x06\x169",
    ]
