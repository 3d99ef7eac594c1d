"""Unit tests see the documented defaults, not whatever the shell exports."""

from __future__ import annotations

import pytest

from trustcard.config import Settings


@pytest.fixture(autouse=True)
def _clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*Settings.model_fields, "TRUSTCARD_SECRETS_DIR"]:
        monkeypatch.delenv(name, raising=False)
