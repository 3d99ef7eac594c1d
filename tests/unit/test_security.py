"""API key matching and the per-client token bucket, without a server."""

from __future__ import annotations

from trustcard.api.security import key_id, matching_key
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
