"""What the pipeline analyses: a post's caption, tags and media, and the accepted post URLs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

INSTAGRAM_HOSTS = frozenset({"instagram.com", "www.instagram.com", "m.instagram.com"})
# Path kinds that address one post; /reels/ and /tv/ are older spellings of /reel/.
POST_PATH_KINDS = frozenset({"p", "reel", "reels", "tv"})
# Shortcodes are URL-safe base64; public ones are 11 characters, private-share ones longer.
_SHORTCODE = re.compile(r"[A-Za-z0-9_-]{5,64}")
# Instagram usernames: letters, digits, '.', '_', at most 30 characters.
_USERNAME = re.compile(r"[A-Za-z0-9._]{1,30}")

# A tag starts after a non-word character (so "a#b" and "&#39;" are not tags).
_HASHTAG = re.compile(r"(?<![\w&#])#(\w+)")
_MENTION = re.compile(r"(?<![\w@.])@([A-Za-z0-9._]{1,30})")


class InvalidPostUrl(ValueError):
    """The text is not the URL of one Instagram post or reel."""


@dataclass(frozen=True)
class MediaItem:
    """One image or video of a post: where it came from and, once downloaded, its bytes.

    `error` says why `data` is missing (download refused, too large, unreachable), so analyzers
    can report that item instead of silently skipping it.
    """

    url: str | None
    data: bytes | None
    content_type: str = ""
    error: str | None = None

    @property
    def is_video(self) -> bool:
        return self.content_type.startswith("video/")


@dataclass(frozen=True)
class PostContent:
    """A post as the analyzers see it."""

    url: str
    shortcode: str
    caption: str
    hashtags: list[str] = field(default_factory=list)
    mentions: list[str] = field(default_factory=list)
    media: list[MediaItem] = field(default_factory=list)
    posted_at: datetime | None = None

    @classmethod
    def from_caption(
        cls,
        url: str,
        caption: str,
        media: list[MediaItem] | None = None,
        posted_at: datetime | None = None,
    ) -> PostContent:
        """Build a post from its URL and caption, deriving shortcode, hashtags and mentions."""
        return cls(
            url=url,
            shortcode=parse_post_url(url),
            caption=caption,
            hashtags=extract_hashtags(caption),
            mentions=extract_mentions(caption),
            media=list(media or []),
            posted_at=posted_at,
        )


def parse_post_url(url: str) -> str:
    """The shortcode of an Instagram post/reel URL; InvalidPostUrl for anything else.

    Accepts http(s), with or without www (or m.), /p/, /reel/, /reels/ and /tv/ paths, an optional
    leading /<username>/, a trailing slash, query string and fragment.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidPostUrl(f"not a valid URL: {text!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidPostUrl(f"expected an http(s) Instagram post URL, got {text!r}")
    host = (parts.hostname or "").lower()
    if host not in INSTAGRAM_HOSTS or parts.username or parts.password or port is not None:
        raise InvalidPostUrl(f"not an instagram.com URL: {text!r}")
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) == 3 and _USERNAME.fullmatch(segments[0]):
        segments = segments[1:]
    if len(segments) != 2 or segments[0].lower() not in POST_PATH_KINDS:
        raise InvalidPostUrl(
            f"not a post URL (expected instagram.com/p/<shortcode>/ or /reel/<shortcode>/): "
            f"{text!r}"
        )
    shortcode = segments[1]
    if not _SHORTCODE.fullmatch(shortcode):
        raise InvalidPostUrl(f"malformed post shortcode {shortcode!r} in {text!r}")
    return shortcode


def canonical_post_url(shortcode: str) -> str:
    """The one URL we fetch for a shortcode (/p/ serves posts and reels alike)."""
    return f"https://www.instagram.com/p/{shortcode}/"


def extract_hashtags(caption: str) -> list[str]:
    """Hashtags without '#', in order, first spelling kept; all-digit tags are not links."""
    return _unique(tag for tag in _HASHTAG.findall(caption) if not tag.isdigit())


def extract_mentions(caption: str) -> list[str]:
    """Mentioned usernames without '@', in order; a sentence's final '.' is not part of them."""
    return _unique(name.rstrip(".") for name in _MENTION.findall(caption) if name.strip("."))


def _unique(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    unique: list[str] = []
    for name in names:
        if name.casefold() not in seen:
            seen.add(name.casefold())
            unique.append(name)
    return unique
