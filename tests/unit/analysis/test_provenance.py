"""The ai_generated analyzer on image files the tests generate with Pillow."""

from __future__ import annotations

import pytest

from tests.unit.analysis.images import (
    IPTC_AI,
    IPTC_CAPTURE,
    IPTC_COMPOSITE,
    SD_PARAMETERS,
    c2pa_jumbf,
    clean_jpeg,
    jpeg,
    jpeg_with_c2pa,
    mp4_with_c2pa,
    png_with_c2pa,
    png_with_text,
    webp,
    xmp_packet,
)
from trustcard.analysis.content import MediaItem, PostContent
from trustcard.analysis.provenance import (
    ProvenanceAnalyzer,
    c2pa_manifest_bytes,
    inspect_media,
)
from trustcard.analysis.signals import Signal

URL = "https://www.instagram.com/p/CxYz123AbCd/"


def _analyze(*items: MediaItem) -> Signal:
    return ProvenanceAnalyzer().analyze(PostContent.from_caption(URL, "", list(items)))


def _image(data: bytes, content_type: str = "image/jpeg") -> MediaItem:
    return MediaItem(url=None, data=data, content_type=content_type)


def test_stable_diffusion_parameters_chunk_is_quoted() -> None:
    signal = _analyze(_image(png_with_text(parameters=SD_PARAMETERS), "image/png"))

    assert signal.status == "ok"
    assert signal.score == 0.95
    assert signal.confidence == 0.85
    assert signal.evidence[0].startswith("media 1 (PNG 64x48): PNG text chunk 'parameters'")
    assert "Steps: 20, Sampler: Euler a" in signal.evidence[0]


def test_compressed_text_chunks_are_read_too() -> None:
    data = png_with_text(compressed=True, parameters=SD_PARAMETERS)
    assert b"zTXt" in data

    assert _analyze(_image(data, "image/png")).score == 0.95


def test_comfyui_prompt_graph_is_recognised() -> None:
    graph = '{"3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20}}}'
    signal = _analyze(_image(png_with_text(prompt=graph, workflow="{}"), "image/png"))

    assert signal.score == 0.95
    assert "ComfyUI prompt graph" in " ".join(signal.evidence)
    # Two agreeing findings are surer than one.
    assert signal.confidence > 0.85


def test_a_parameters_key_without_generation_settings_counts_less() -> None:
    signal = _analyze(_image(png_with_text(parameters="exposure +1"), "image/png"))

    assert signal.score == 0.8
    assert signal.confidence == 0.5


def test_xmp_digital_source_type_trained_algorithmic_media() -> None:
    signal = _analyze(_image(jpeg(xmp=xmp_packet(IPTC_AI))))

    assert signal.score == 0.97
    assert signal.confidence == 0.9
    assert IPTC_AI in signal.evidence[0]
    assert "created by a trained AI model" in signal.evidence[0]


def test_composite_with_ai_parts_and_the_editor_named() -> None:
    signal = _analyze(
        _image(jpeg(xmp=xmp_packet(IPTC_COMPOSITE, "Adobe Photoshop 25.0 (Windows)")))
    )

    assert signal.score == 0.75
    assert "composite including AI-generated parts" in signal.evidence[0]


def test_xmp_creator_tool_naming_a_generator() -> None:
    signal = _analyze(_image(jpeg(xmp=xmp_packet(creator_tool="Midjourney v6"))))

    assert signal.score == 0.9
    assert 'XMP CreatorTool: "Midjourney v6" (names midjourney)' in signal.evidence[0]


def test_exif_software_naming_a_generator() -> None:
    signal = _analyze(_image(jpeg(software="DALL-E 3")))

    assert signal.score == 0.9
    assert 'EXIF Software: "DALL-E 3"' in signal.evidence[0]


def test_exif_software_of_an_ordinary_editor_is_no_finding() -> None:
    signal = _analyze(_image(jpeg(software="GIMP 2.10.36")))

    assert signal.score == 0.1
    assert signal.confidence == 0.1


def test_clean_photo_scores_low_with_low_confidence() -> None:
    signal = _analyze(_image(clean_jpeg()))

    assert signal.status == "ok"
    assert signal.score == 0.1
    assert signal.confidence == 0.1
    assert "absence of provenance proves nothing" in signal.evidence[0]


@pytest.mark.parametrize("container", [jpeg_with_c2pa, png_with_c2pa])
def test_an_unsigned_hand_made_manifest_counts_for_nothing(container: object) -> None:
    # The JUMBF/CBOR the old byte walker read as a declaration: no signature, so void now.
    data = container(c2pa_jumbf("ChatGPT", IPTC_AI))  # type: ignore[operator]
    assert c2pa_manifest_bytes(data) is not None

    signal = _analyze(_image(data))

    assert (signal.score, signal.confidence) == (0.5, 0.1)
    assert signal.data["media"][0]["c2pa_validation"] == "invalid_signature"
    assert "what it declares is ignored" in " ".join(signal.evidence)


def test_an_unsigned_camera_manifest_no_longer_lowers_the_score() -> None:
    signal = _analyze(_image(jpeg_with_c2pa(c2pa_jumbf("Leica M11", IPTC_CAPTURE, version=2))))

    assert signal.confidence == 0.1
    assert "digitalCapture" not in " ".join(signal.evidence)


def test_non_image_bytes_are_a_note_and_the_other_media_still_count() -> None:
    signal = _analyze(
        _image(b"%PDF-1.7 not an image at all", "image/jpeg"),
        _image(png_with_text(parameters=SD_PARAMETERS), "image/png"),
    )

    assert signal.status == "ok"
    assert signal.score == 0.95
    assert signal.detail == "1 of 2 media inspected; worst: media 2"
    assert signal.evidence[0].startswith("media 1 (not an image): not an image format")
    assert "b'%PDF-1.7" in signal.evidence[0]


def test_only_non_images_make_the_signal_unavailable() -> None:
    signal = _analyze(
        _image(b"hello", "text/plain"),
        MediaItem("https://cdn.example/v.mp4", None, "video/mp4", error="not fetched: HTTP 404"),
    )

    assert signal.status == "unavailable"
    assert signal.score is None
    assert signal.detail == "no image to inspect"
    assert "not fetched: HTTP 404" in signal.evidence[1]


def test_no_media_at_all() -> None:
    assert _analyze().detail == "the post has no media"


def test_truncated_image_is_reported_not_raised() -> None:
    data = png_with_text(parameters=SD_PARAMETERS)
    report = inspect_media(1, _image(data[:40], "image/png"))

    assert report.score is None
    assert report.notes


def test_webp_with_xmp_source_type() -> None:
    signal = _analyze(_image(webp(xmp=xmp_packet(IPTC_AI)), "image/webp"))

    assert signal.score == 0.97
    assert signal.evidence[0].startswith("media 1 (WEBP 64x48): XMP Iptc4xmpExt:DigitalSourceType")


def test_video_with_a_c2pa_manifest_is_read_without_decoding_frames() -> None:
    video = mp4_with_c2pa(c2pa_jumbf("OpenAI Sora", IPTC_AI))

    signal = _analyze(_image(video, "video/mp4"))

    assert signal.status == "ok"
    assert signal.data["media"][0]["c2pa_validation"] == "invalid_signature"  # unsigned
    evidence = " ".join(signal.evidence)
    assert f"media 1 (video/mp4, {len(video)} bytes)" in evidence
    assert "only embedded XMP and C2PA were searched" in evidence


def test_video_without_provenance_is_not_scored() -> None:
    signal = _analyze(_image(mp4_with_c2pa(None), "video/mp4"))

    assert signal.status == "unavailable"
    assert "its frames are not inspected" in signal.evidence[0]


def test_declared_content_type_does_not_decide_what_is_inspected() -> None:
    signal = _analyze(_image(png_with_text(parameters=SD_PARAMETERS), "video/mp4"))

    assert signal.score == 0.95
