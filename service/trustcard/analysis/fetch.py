"""Fetching a public post page and its media over HTTP, with time and size bounds.

Everything here fails with ExtractionError (the page) or a per-item error string (media), each
one readable sentence: the task stores it as the reason an analysis failed.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urljoin, urlsplit

import httpx

ExtractionFailure = Literal[
    "blocked", "unreachable", "not_found", "too_large", "not_html", "no_metadata"
]
# Why a post page could not be had, finer than ExtractionFailure: a metric label
# (trustcard_analysis_extractions_total{outcome}), so a fixed set, never free text.
FetchCause = Literal[
    "login_wall",
    "forbidden",
    "rate_limited",
    "not_found",
    "timeout",
    "connect_failed",
    "http_error",
    "refused_address",
    "too_many_redirects",
    "too_large",
    "not_html",
    "no_metadata",
]
FETCH_CAUSES: tuple[FetchCause, ...] = get_args(FetchCause)
MAX_REDIRECTS = 3
HTML_TYPES = ("text/html", "application/xhtml+xml")
# Where a login wall sends anonymous visitors (Instagram: /accounts/login/, /challenge/).
LOGIN_PATH_MARKERS = ("/accounts/login", "/login", "/challenge", "/signin", "/sign_in")


class ExtractionError(Exception):
    """The post's content could not be obtained; str() is one readable sentence."""

    def __init__(self, reason: ExtractionFailure, message: str, cause: FetchCause) -> None:
        super().__init__(message)
        self.reason = reason
        self.cause = cause


@dataclass(frozen=True)
class FetchLimits:
    """Bounds of every download: one request's time, and bytes per page and per media item."""

    timeout_seconds: float
    max_page_bytes: int
    max_media_bytes: int
    user_agent: str
    # `host:port`s fetched from even on a private address (the configured post site, e.g. a
    # local test server); any other must resolve to public addresses only. The port counts: a
    # trusted 127.0.0.1:8080 does not make the local Redis on 127.0.0.1:6379 reachable.
    trusted_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Download:
    url: str
    content_type: str
    body: bytes


class DownloadRefused(Exception):
    """A download that broke a rule (size, address, status); str() says which."""


def new_client(limits: FetchLimits) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(limits.timeout_seconds),
        headers={"User-Agent": limits.user_agent, "Accept-Language": "en"},
        follow_redirects=False,
        trust_env=False,
    )


def fetch_page(client: httpx.Client, url: str, limits: FetchLimits) -> Download:
    """The HTML of a post page; ExtractionError when blocked, missing, too large or not HTML."""
    deadline = time.monotonic() + limits.timeout_seconds
    try:
        download = _get(client, url, limits.max_page_bytes, deadline, page=True, limits=limits)
    except ExtractionError:
        raise
    except DownloadRefused as exc:
        raise ExtractionError("too_large", f"post page {url}: {exc}", "too_large") from None
    except httpx.TimeoutException:
        raise ExtractionError(
            "unreachable",
            f"post page {url}: no complete answer within {limits.timeout_seconds:g} s",
            "timeout",
        ) from None
    except httpx.HTTPError as exc:
        raise ExtractionError(
            "unreachable", f"post page {url}: {_describe(exc)}", "connect_failed"
        ) from None
    if download.content_type not in HTML_TYPES:
        raise ExtractionError(
            "not_html",
            f"post page {url}: expected HTML, got {download.content_type or 'no content type'}",
            "not_html",
        )
    return download


def fetch_media(client: httpx.Client, url: str, limits: FetchLimits) -> Download:
    """One media file; DownloadRefused (or httpx.HTTPError) saying why it was not fetched."""
    deadline = time.monotonic() + limits.timeout_seconds
    try:
        return _get(client, url, limits.max_media_bytes, deadline, page=False, limits=limits)
    except ExtractionError as exc:
        raise DownloadRefused(str(exc)) from None


def _get(
    client: httpx.Client,
    url: str,
    max_bytes: int,
    deadline: float,
    *,
    page: bool,
    limits: FetchLimits | None = None,
) -> Download:
    for hop in range(MAX_REDIRECTS + 1):
        # Every redirect hop is checked; a page's first URL is the configured site's own.
        if limits is not None and (hop > 0 or not page):
            try:
                _require_public_address(url, limits.trusted_hosts)
            except DownloadRefused as exc:
                if page:
                    raise ExtractionError(
                        "blocked", f"post page redirect refused: {exc}", "refused_address"
                    ) from None
                raise
        with client.stream("GET", url) as response:
            if response.is_redirect:
                location = response.headers.get("location", "")
                target = urljoin(url, location)
                if page and _is_login_page(target):
                    raise ExtractionError(
                        "blocked",
                        f"post page {url} redirects to a login page ({target}): the site "
                        "does not show this post to anonymous visitors",
                        "login_wall",
                    )
                url = target
                continue
            _check_status(url, response.status_code, page)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise DownloadRefused(f"{declared} bytes is over the {max_bytes}-byte limit")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise DownloadRefused(f"more than the {max_bytes}-byte limit")
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("download too slow", request=response.request)
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            return Download(str(response.url), content_type, bytes(body))
    raise ExtractionError(
        "unreachable", f"{url}: more than {MAX_REDIRECTS} redirects", "too_many_redirects"
    )


def _check_status(url: str, status: int, page: bool) -> None:
    what = "post page" if page else "media"
    if status in (401, 403, 429):
        raise ExtractionError(
            "blocked",
            f"{what} {url}: the site refused anonymous access (HTTP {status}"
            + (", rate limited)" if status == 429 else ", login required or blocked)"),
            "rate_limited" if status == 429 else "forbidden",
        )
    if status in (404, 410):
        raise ExtractionError("not_found", f"{what} {url}: not found (HTTP {status})", "not_found")
    if status >= 400:
        raise ExtractionError(
            "unreachable", f"{what} {url}: HTTP {status} from the site", "http_error"
        )


def _is_login_page(url: str) -> bool:
    path = urlsplit(url).path.lower()
    return any(marker in path for marker in LOGIN_PATH_MARKERS)


def _require_public_address(url: str, trusted_hosts: frozenset[str]) -> None:
    """Refuse media URLs pointing into private networks (a client could name any URL).

    Resolution happens here and again when connecting, so DNS rebinding between the two is not
    prevented; the worker's network policy is the real boundary.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise DownloadRefused(f"{url}: not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if host_and_port(url) in trusted_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DownloadRefused(f"{url}: host does not resolve ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise DownloadRefused(f"{url}: refusing a non-public address ({address})")


def host_and_port(url: str) -> str:
    """`host:port` of an http(s) URL, the scheme's default port when it names none."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return f"{(parts.hostname or '').lower()}:{parts.port or default}"


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})"
    return f"{type(exc).__name__}: {exc}"
