"""Fetching and parsing post pages against a real local HTTP server."""

from __future__ import annotations

import base64
import time
from html import escape

import pytest

from tests.unit.analysis.conftest import PostSite, Route
from tests.unit.analysis.images import SD_PARAMETERS, png_with_text
from trustcard.analysis.extraction import (
    caption_from_meta,
    extract_fetched,
    extract_supplied,
    parse_meta,
)
from trustcard.analysis.fetch import ExtractionError, FetchLimits
from trustcard.analysis.pipeline import PipelineConfig, run_pipeline
from trustcard.analysis.supplied import SuppliedContent
from trustcard.config import Settings

SHORTCODE = "CxYz123AbCd"
POST_URL = f"https://www.instagram.com/p/{SHORTCODE}/"
CAPTION = 'Sunset over the bay \u2600 "no filter" #sunset #nofilter with @friend.'


def _limits(site: PostSite, **overrides: object) -> FetchLimits:
    values: dict[str, object] = {
        "timeout_seconds": 2.0,
        "max_page_bytes": 64 * 1024,
        "max_media_bytes": 256 * 1024,
        "user_agent": "trustcard-tests",
        "trusted_hosts": frozenset({f"127.0.0.1:{site.port}"}),
    }
    values.update(overrides)
    return FetchLimits(**values)  # type: ignore[arg-type]


def og_page(site: PostSite, caption: str, *image_paths: str) -> bytes:
    title = f'someone on Instagram: "{caption}"'
    description = f'1,024 likes, 12 comments - someone on June 1, 2026: "{caption}". '
    images = "".join(
        f'<meta property="og:image" content="{escape(site.url(p))}">' for p in image_paths
    )
    return (
        "<!DOCTYPE html><html><head><title>Instagram</title>"
        f'<meta property="og:title" content="{escape(title)}">'
        f'<meta property="og:description" content="{escape(description)}">'
        f'<meta property="article:published_time" content="2026-06-01T18:30:00Z">'
        f"{images}</head><body><div id=root></div></body></html>"
    ).encode()


def test_og_page_gives_caption_tags_and_media(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(body=og_page(site, CAPTION, "/media/ai.png"))
    site.routes["/media/ai.png"] = Route(
        body=png_with_text(parameters=SD_PARAMETERS), content_type="image/png"
    )

    extraction = extract_fetched(POST_URL, site.base_url, _limits(site))

    content = extraction.content
    assert extraction.source == "fetched"
    assert extraction.page_url == site.url(f"/p/{SHORTCODE}/")
    assert content.caption == CAPTION
    assert content.hashtags == ["sunset", "nofilter"]
    assert content.mentions == ["friend"]
    assert content.posted_at is not None
    assert content.posted_at.isoformat() == "2026-06-01T18:30:00+00:00"
    assert len(content.media) == 1
    assert content.media[0].content_type == "image/png"
    assert content.media[0].data == site.routes["/media/ai.png"].body


def test_fetched_post_runs_through_the_whole_pipeline(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(body=og_page(site, CAPTION, "/media/ai.png"))
    site.routes["/media/ai.png"] = Route(
        body=png_with_text(parameters=SD_PARAMETERS), content_type="image/png"
    )
    config = PipelineConfig(post_base_url=site.base_url, fetch_timeout_seconds=2.0, plugins=[])

    result = run_pipeline(POST_URL, None, claims=[], config=config)

    assert result.content["source"] == "fetched"
    assert result.content["media"][0]["source"] == site.url("/media/ai.png")
    ai = result.stages[1]
    assert ai.status == "ok"
    assert ai.signal is not None
    assert ai.signal["score"] >= 0.9
    assert any("'parameters'" in line for line in ai.signal["evidence"])


def test_login_redirect_is_reported_as_blocked(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(
        302, b"", headers={"Location": f"/accounts/login/?next=/p/{SHORTCODE}/"}
    )

    with pytest.raises(ExtractionError, match="redirects to a login page") as caught:
        extract_fetched(POST_URL, site.base_url, _limits(site))
    assert caught.value.reason == "blocked"
    assert caught.value.cause == "login_wall"


@pytest.mark.parametrize(
    ("status", "reason", "cause", "message"),
    [
        (404, "not_found", "not_found", r"not found \(HTTP 404\)"),
        (429, "blocked", "rate_limited", r"refused anonymous access \(HTTP 429, rate limited\)"),
        (403, "blocked", "forbidden", r"HTTP 403, login required or blocked"),
        (503, "unreachable", "http_error", r"HTTP 503 from the site"),
    ],
)
def test_error_statuses_become_readable_reasons(
    site: PostSite, status: int, reason: str, cause: str, message: str
) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(status, b"nope", "text/plain")

    with pytest.raises(ExtractionError, match=message) as caught:
        extract_fetched(POST_URL, site.base_url, _limits(site))
    assert caught.value.reason == reason
    assert caught.value.cause == cause


def test_redirect_to_another_page_is_followed(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(301, b"", headers={"Location": "/p/Other12345/"})
    site.routes["/p/Other12345/"] = Route(body=og_page(site, "moved caption"))

    assert extract_fetched(POST_URL, site.base_url, _limits(site)).content.caption == (
        "moved caption"
    )


def test_oversized_page_is_refused(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(body=b"<html>" + b"x" * 20_000 + b"</html>")

    with pytest.raises(ExtractionError, match="over the 4096-byte limit") as caught:
        extract_fetched(POST_URL, site.base_url, _limits(site, max_page_bytes=4096))
    assert caught.value.reason == "too_large"
    assert caught.value.cause == "too_large"


def test_slow_page_times_out(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(body=og_page(site, "late"), delay=1.5)

    with pytest.raises(ExtractionError, match=r"no complete answer within 0\.3 s") as caught:
        extract_fetched(POST_URL, site.base_url, _limits(site, timeout_seconds=0.3))
    assert caught.value.reason == "unreachable"
    assert caught.value.cause == "timeout"


def test_page_trickling_in_slower_than_the_timeout_is_cut_off(site: PostSite) -> None:
    # Every piece arrives well within the read timeout; the whole body does not.
    site.routes[f"/p/{SHORTCODE}/"] = Route(body=og_page(site, "x" * 3000), drip=0.1)

    started = time.monotonic()
    with pytest.raises(ExtractionError, match=r"no complete answer within 0\.5 s"):
        extract_fetched(POST_URL, site.base_url, _limits(site, timeout_seconds=0.5))
    assert time.monotonic() - started < 1.5


def test_non_html_page_is_refused(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(body=b'{"a": 1}', content_type="application/json")

    with pytest.raises(ExtractionError, match="expected HTML, got application/json"):
        extract_fetched(POST_URL, site.base_url, _limits(site))


def test_page_without_post_metadata_is_a_login_wall(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(body=b"<html><head><title>Login</title></head></html>")

    with pytest.raises(ExtractionError, match="has no post metadata") as caught:
        extract_fetched(POST_URL, site.base_url, _limits(site))
    assert caught.value.reason == "no_metadata"


def test_unreachable_site_is_reported(site: PostSite) -> None:
    closed = f"http://127.0.0.1:{site.port}"
    site.server.shutdown()
    site.server.server_close()

    with pytest.raises(ExtractionError, match="cannot connect") as caught:
        extract_fetched(POST_URL, closed, _limits(site))
    assert caught.value.reason == "unreachable"
    assert caught.value.cause == "connect_failed"


def test_media_problems_are_per_item_notes_not_failures(site: PostSite) -> None:
    site.routes[f"/p/{SHORTCODE}/"] = Route(
        body=og_page(site, CAPTION, "/media/big.png", "/media/gone.png", "/media/ok.png")
    )
    site.routes["/media/big.png"] = Route(body=b"\x89PNG" + b"0" * 5000, content_type="image/png")
    site.routes["/media/ok.png"] = Route(body=png_with_text(), content_type="image/png")

    media = extract_fetched(
        POST_URL, site.base_url, _limits(site, max_media_bytes=4096)
    ).content.media

    assert [item.data is not None for item in media] == [False, False, True]
    assert media[0].error is not None
    assert "over the 4096-byte limit" in media[0].error
    assert media[1].error is not None
    assert "not found (HTTP 404)" in media[1].error


def test_supplied_media_urls_into_private_networks_are_refused(site: PostSite) -> None:
    site.routes["/media/ok.png"] = Route(body=png_with_text(), content_type="image/png")
    supplied = SuppliedContent.model_validate({"media": [{"url": site.url("/media/ok.png")}]})

    untrusted = extract_supplied(POST_URL, supplied, _limits(site, trusted_hosts=frozenset()))
    trusted = extract_supplied(POST_URL, supplied, _limits(site))

    error = untrusted.content.media[0].error
    assert error is not None
    assert "refusing a non-public address (127.0.0.1)" in error
    assert site.hits.get("/media/ok.png") == 1  # only the trusted run fetched it
    assert trusted.content.media[0].data == site.routes["/media/ok.png"].body


def test_supplied_inline_media_and_tags_are_merged() -> None:
    image = png_with_text()
    supplied = SuppliedContent.model_validate(
        {
            "caption": "Look #Sunset @Alice",
            "hashtags": ["#sunset", "beach"],
            "mentions": ["@bob"],
            "media": [
                {"data_base64": base64.b64encode(image).decode(), "content_type": "image/png"}
            ],
        }
    )
    limits = FetchLimits(1.0, 1024, 1024, "trustcard-tests")

    content = extract_supplied(POST_URL, supplied, limits).content

    assert content.hashtags == ["sunset", "beach"]
    assert content.mentions == ["bob", "Alice"]
    assert content.media[0].data == image
    assert content.shortcode == SHORTCODE


def test_caption_parsing_falls_back_to_the_plain_description() -> None:
    meta = parse_meta(
        '<meta name="description" content="Just words &amp; more, no quotes">'
        '<meta property="og:image" content="/a.jpg">'
    )
    assert caption_from_meta(meta) == "Just words & more, no quotes"
    assert meta.all("og:image") == ["/a.jpg"]


def test_page_redirect_into_a_private_port_is_refused(site: PostSite) -> None:
    """A page redirecting to another loopback port (the local Redis) is never fetched."""
    with PostSite() as internal:  # stands in for Redis: anything listening on loopback
        internal.routes["/"] = Route(body=og_page(internal, "internal data"))
        site.routes[f"/p/{SHORTCODE}/"] = Route(302, b"", headers={"Location": internal.url("/")})

        with pytest.raises(ExtractionError, match="non-public address") as caught:
            extract_fetched(POST_URL, site.base_url, _limits(site))
        assert caught.value.reason == "blocked"
        assert caught.value.cause == "refused_address"
        assert internal.hits.get("/") is None


def test_trusted_host_rule_matches_the_port_too(site: PostSite) -> None:
    """Media on the trusted site's host but another port is refused like any private address."""
    with PostSite() as other_port:
        other_port.routes["/media/ok.png"] = Route(body=png_with_text(), content_type="image/png")
        url = other_port.url("/media/ok.png")
        supplied = SuppliedContent.model_validate({"media": [{"url": url}]})

        # The limits the worker derives from POST_FETCH_BASE_URL (the trusted site).
        settings = Settings(POST_FETCH_BASE_URL=site.base_url)
        limits = PipelineConfig.from_settings(settings).fetch_limits()
        error = extract_supplied(POST_URL, supplied, limits).content.media[0].error
        assert error is not None
        assert "refusing a non-public address" in error
        assert other_port.hits.get("/media/ok.png") is None
