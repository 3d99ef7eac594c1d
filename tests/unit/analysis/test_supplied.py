"""Client-supplied content: limits and base64 media."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from trustcard.analysis.supplied import (
    MAX_CAPTION_CHARS,
    MAX_HASHTAGS,
    MAX_MEDIA_BYTES,
    MAX_MEDIA_ITEMS,
    SuppliedContent,
)


def _error(data: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as caught:
        SuppliedContent.model_validate(data)
    return str(caught.value)


def test_valid_content_with_both_media_forms() -> None:
    content = SuppliedContent.model_validate(
        {
            "caption": "hello",
            "hashtags": ["#a", "b"],
            "mentions": ["@c"],
            "media": [
                {"url": "https://cdn.example/x.jpg", "content_type": "Image/JPEG"},
                {"data_base64": base64.urlsafe_b64encode(b"\xfb\xff bytes").decode().rstrip("=")},
            ],
            "posted_at": "2026-06-01T10:00:00Z",
        }
    )

    assert content.hashtags == ["a", "b"]
    assert content.mentions == ["c"]
    assert content.media[0].content_type == "image/jpeg"
    assert content.media[0].decoded() is None
    assert content.media[1].decoded() == b"\xfb\xff bytes"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"caption": "x" * (MAX_CAPTION_CHARS + 1)}, "at most 2200 characters"),
        ({"hashtags": ["t"] * (MAX_HASHTAGS + 1)}, "at most 30 items"),
        ({"media": [{"url": "https://a.example/i.jpg"}] * (MAX_MEDIA_ITEMS + 1)}, "at most 10"),
        ({"media": [{"url": "ftp://a.example/i.jpg"}]}, "must be an http(s) URL"),
        ({"media": [{"data_base64": "not base64!!"}]}, "not valid base64"),
        ({"media": [{}]}, "exactly one of url and data_base64"),
        ({"media": [{"url": "https://a.example/i", "data_base64": "AA=="}]}, "exactly one of"),
        ({"media": [{"url": "https://a.example/i", "content_type": "jpeg"}]}, "type/subtype"),
        ({"captions": "typo"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_content_is_refused_with_a_reason(data: dict[str, object], message: str) -> None:
    assert message in _error(data)


def test_oversized_media_is_refused_without_decoding() -> None:
    too_big = base64.b64encode(b"\0" * (MAX_MEDIA_BYTES + 3)).decode()

    assert "larger than 5242880 bytes" in _error({"media": [{"data_base64": too_big}]})
