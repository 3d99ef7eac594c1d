"""Post content a client supplies with its request, so the worker need not fetch the page.

The API uses SuppliedContent as the `content` field of POST /analysis/posts; the limits below
are Instagram's own (caption, tags) or keep one request's work bounded (media).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_CAPTION_CHARS = 2200
MAX_HASHTAGS = 30
MAX_MENTIONS = 20
MAX_MEDIA_ITEMS = 10
MAX_MEDIA_BYTES = 5 * 1024 * 1024
MAX_MEDIA_URL_CHARS = 2048
MAX_TAG_CHARS = 100

_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")

Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]


class SuppliedMedia(BaseModel):
    """One image or video: a URL the worker downloads, or the bytes themselves in base64."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, max_length=MAX_MEDIA_URL_CHARS)
    data_base64: str | None = None
    content_type: str = Field(default="", max_length=100)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("media url must be an http(s) URL with a host")
        return value

    @field_validator("content_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not _CONTENT_TYPE.fullmatch(value):
            raise ValueError(f"content_type must look like type/subtype, got {value!r}")
        return value

    @field_validator("data_base64")
    @classmethod
    def _bounded_base64(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Checked on the encoded length first, so an oversized payload is never decoded.
        if len(value) > (MAX_MEDIA_BYTES + 2) // 3 * 4:
            raise ValueError(f"media larger than {MAX_MEDIA_BYTES} bytes once decoded")
        decode_base64(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.url is None) == (self.data_base64 is None):
            raise ValueError("give exactly one of url and data_base64 for each media item")
        return self

    def decoded(self) -> bytes | None:
        """The media bytes, when supplied inline."""
        return None if self.data_base64 is None else decode_base64(self.data_base64)


class SuppliedContent(BaseModel):
    """What a client already knows about the post; anything omitted stays empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    caption: str = Field(default="", max_length=MAX_CAPTION_CHARS)
    hashtags: list[Tag] = Field(default_factory=list, max_length=MAX_HASHTAGS)
    mentions: list[Tag] = Field(default_factory=list, max_length=MAX_MENTIONS)
    media: list[SuppliedMedia] = Field(default_factory=list, max_length=MAX_MEDIA_ITEMS)
    posted_at: datetime | None = None

    @field_validator("hashtags")
    @classmethod
    def _without_hash(cls, values: list[str]) -> list[str]:
        return [value.strip().lstrip("#") for value in values]

    @field_validator("mentions")
    @classmethod
    def _without_at(cls, values: list[str]) -> list[str]:
        return [value.strip().lstrip("@") for value in values]


def decode_base64(text: str) -> bytes:
    """Strict standard or URL-safe base64; ValueError with a readable reason otherwise."""
    compact = "".join(text.split())
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data_base64 is not valid base64") from None
    if len(data) > MAX_MEDIA_BYTES:
        raise ValueError(f"media larger than {MAX_MEDIA_BYTES} bytes once decoded")
    return data
