"""API key matching and the per-client token bucket, without a server."""

from __future__ import annotations

from trustcard.api.security import RateLimiter, key_id, matching_key
from trustcard.config import Settings


def test_keys_parse_from_a_comma_separated_secret() -> None:
    settings = Settings(API_KEYS=" alpha, ,beta ")
    assert settings.api_keys == ("alpha", "beta")
    assert Settings().api_keys == ()
    # The keys never show in the settings' repr (logs, errors).
    assert "alpha" not in repr(settings)


def test_matching_key() -> None:
    keys = ("alpha", "beta")
    assert matching_key("beta", keys) == "beta"
    assert matching_key("bet", keys) is None
    assert matching_key("", keys) is None
    assert matching_key("alpha", ()) is None


def test_key_id_names_a_key_without_revealing_it() -> None:
    assert key_id("alpha") == key_id("alpha") != key_id("beta")
    assert "alpha" not in key_id("alpha")


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(per_second=10, burst=3)
    assert [limiter.retry_after("a", now=100.0) for _ in range(3)] == [None, None, None]
    wait = limiter.retry_after("a", now=100.0)
    assert wait is not None
    assert abs(wait - 0.1) < 1e-9
    # Another client has its own bucket; time refills this one.
    assert limiter.retry_after("b", now=100.0) is None
    assert limiter.retry_after("a", now=100.15) is None


def test_limiter_forgets_the_least_recent_clients() -> None:
    limiter = RateLimiter(per_second=1, burst=1, max_clients=2)
    for client in ("a", "b", "c"):
        limiter.retry_after(client, now=0.0)
    # "a" was evicted: it starts with a full bucket again.
    assert limiter.retry_after("a", now=0.0) is None
    assert limiter.retry_after("c", now=0.0) is not None
