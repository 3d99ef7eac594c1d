"""The extract stage: a PostContent from client-supplied content or from the public post page.

The page is read through its OpenGraph/meta tags (what link previews use), not by scraping
markup that changes weekly: og:title / og:description carry the caption in the form
`<user> on Instagram: "<caption>"`, og:image / og:video the media URLs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx

from trustcard.analysis.content import (
    MediaItem,
    PostContent,
    extract_hashtags,
    extract_mentions,
    parse_post_url,
)
from trustcard.analysis.fetch import (
    DownloadRefused,
    ExtractionError,
    FetchLimits,
    fetch_media,
    fetch_page,
    new_client,
)
from trustcard.analysis.supplied import MAX_MEDIA_ITEMS, SuppliedContent

_QUOTED_CAPTION = re.compile(r":\s*[\"“](?P<caption>.*)[\"”]\s*\.?\s*$", re.DOTALL)
_IMAGE_KEYS = ("og:image", "og:image:secure_url", "og:image:url", "twitter:image")
_VIDEO_KEYS = ("og:video", "og:video:secure_url", "og:video:url")
# All media downloads of one post share this many single-download timeouts.
MEDIA_TIME_BUDGET_FACTOR = 3


@dataclass(frozen=True)
class Extraction:
    """The post as extracted, and where it came from."""

    content: PostContent
    source: str  # "supplied" | "fetched"
    page_url: str | None = None


@dataclass
class PageMeta:
    """The meta tags of a page: every value of each property/name, in page order."""

    values: dict[str, list[str]] = field(default_factory=dict)
    title: str = ""

    def first(self, *keys: str) -> str:
        for key in keys:
            for value in self.values.get(key, []):
                if value.strip():
                    return value.strip()
        return ""

    def all(self, *keys: str) -> list[str]:
        return [v.strip() for key in keys for v in self.values.get(key, []) if v.strip()]


class _MetaParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta = PageMeta()
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            named = dict(attrs)
            key = (named.get("property") or named.get("name") or "").strip().lower()
            content = named.get("content")
            if key and content is not None:
                self.meta.values.setdefault(key, []).append(content)
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.meta.title += data


def parse_meta(html: str) -> PageMeta:
    parser = _MetaParser()
    parser.feed(html)
    parser.close()
    return parser.meta


def caption_from_meta(meta: PageMeta) -> str:
    """The caption quoted in og:title/og:description, else the description as it stands."""
    for key in ("og:title", "og:description", "description", "twitter:title"):
        text = meta.first(key)
        found = _QUOTED_CAPTION.search(text)
        if found:
            return found.group("caption").strip()
    return meta.first("og:description", "description", "twitter:description")


def extract_supplied(url: str, supplied: SuppliedContent, limits: FetchLimits) -> Extraction:
    """The post from the client's content; media given by URL are downloaded here."""
    media: list[MediaItem] = []
    with new_client(limits) as client:
        budget = time.monotonic() + MEDIA_TIME_BUDGET_FACTOR * limits.timeout_seconds
        for item in supplied.media:
            data = item.decoded()
            if data is not None:
                media.append(MediaItem(url=None, data=data, content_type=item.content_type))
            elif item.url is not None:
                media.append(_download_media(client, item.url, item.content_type, limits, budget))
    caption = supplied.caption
    content = PostContent(
        url=url,
        shortcode=parse_post_url(url),
        caption=caption,
        hashtags=_merge(supplied.hashtags, extract_hashtags(caption)),
        mentions=_merge(supplied.mentions, extract_mentions(caption)),
        media=media,
        posted_at=supplied.posted_at,
    )
    return Extraction(content=content, source="supplied")


def extract_fetched(url: str, base_url: str, limits: FetchLimits) -> Extraction:
    """The post from its public page at `<base_url>/p/<shortcode>/`; ExtractionError if not."""
    shortcode = parse_post_url(url)
    page_url = f"{base_url.rstrip('/')}/p/{shortcode}/"
    with new_client(limits) as client:
        page = fetch_page(client, page_url, limits)
        meta = parse_meta(page.body.decode(_charset(page.body), errors="replace"))
        image_urls = _unique(urljoin(page.url, u) for u in meta.all(*_IMAGE_KEYS))
        video_urls = _unique(urljoin(page.url, u) for u in meta.all(*_VIDEO_KEYS))
        caption = caption_from_meta(meta)
        if not caption and not image_urls and not video_urls:
            raise ExtractionError(
                "no_metadata",
                f"post page {page_url} has no post metadata (no OpenGraph caption or media): "
                "a login wall or an error page",
                "no_metadata",
            )
        budget = time.monotonic() + MEDIA_TIME_BUDGET_FACTOR * limits.timeout_seconds
        media = [
            _download_media(client, media_url, "", limits, budget)
            for media_url in (image_urls + video_urls)[:MAX_MEDIA_ITEMS]
        ]
    content = PostContent(
        url=url,
        shortcode=shortcode,
        caption=caption,
        hashtags=extract_hashtags(caption),
        mentions=extract_mentions(caption),
        media=media,
        posted_at=_published(meta),
    )
    return Extraction(content=content, source="fetched", page_url=page_url)


def _download_media(
    client: httpx.Client, url: str, content_type: str, limits: FetchLimits, budget: float
) -> MediaItem:
    if time.monotonic() > budget:
        return MediaItem(
            url, None, content_type, error="not fetched: the post's time budget ran out"
        )
    try:
        download = fetch_media(client, url, limits)
    except DownloadRefused as exc:
        return MediaItem(url, None, content_type, error=f"not fetched: {exc}")
    except httpx.TimeoutException:
        return MediaItem(
            url,
            None,
            content_type,
            error=f"not fetched: no complete answer within {limits.timeout_seconds:g} s",
        )
    except httpx.HTTPError as exc:
        return MediaItem(url, None, content_type, error=f"not fetched: {type(exc).__name__}: {exc}")
    return MediaItem(url, download.body, content_type or download.content_type)


def _charset(body: bytes) -> str:
    head = body[:2048].lower()
    found = re.search(rb"charset=[\"']?([a-z0-9_-]+)", head)
    if found:
        name = found.group(1).decode()
        try:
            "".encode(name)
        except LookupError:
            return "utf-8"
        return name
    return "utf-8"


def _published(meta: PageMeta) -> datetime | None:
    text = meta.first("article:published_time", "og:updated_time")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _merge(first: list[str], second: list[str]) -> list[str]:
    return _unique([*first, *second], fold=True)


def _unique(values: Iterable[str], *, fold: bool = False) -> list[str]:
    seen: set[str] = set()
    result: list[str] = []
    for value in values:
        key = value.casefold() if fold else value
        if key not in seen:
            seen.add(key)
            result.append(value)
    return result
