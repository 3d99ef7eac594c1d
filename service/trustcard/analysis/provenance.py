"""The ai_generated stage: provenance metadata that generators and editors leave in image files.

What it reads, per image: PNG text chunks (Stable Diffusion web UI `parameters`, ComfyUI
`prompt`/`workflow`, InvokeAI, NovelAI, Fooocus), EXIF Software / ImageDescription, XMP
CreatorTool / tiff:Software and IPTC DigitalSourceType, and C2PA manifests (JUMBF in JPEG APP11
segments, the PNG caBX chunk, the WebP C2PA chunk, MP4 boxes).
Bytes Pillow cannot open (video, HEIC) are searched for embedded XMP and C2PA only.
C2PA manifests are read AND validated by c2pa-python (trustcard.analysis.c2pa_verify): only a
valid manifest whose signer chains to a configured trust anchor (C2PA_TRUST_ANCHORS_FILE) counts
with high confidence; an untrusted signer's declaration counts little, and a manifest whose
signature fails or whose asset was changed after signing counts not at all.
What it cannot see: metadata stripped by an upload (Instagram re-encodes and drops
most of it), screenshots, re-encoded or re-saved copies, generators that write nothing, invisible
watermarks (SynthID and the like). So absence of metadata scores low with low
confidence: it proves nothing.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException
from PIL import Image, UnidentifiedImageError

from trustcard.analysis.c2pa_verify import (
    Declaration,
    Validation,
    load_trust_anchors,
    read_manifest,
)
from trustcard.analysis.content import MediaItem, PostContent
from trustcard.analysis.signals import Signal

AI_GENERATED = "ai_generated"
QUOTE_CHARS = 160

# Lower-case names found in Software / CreatorTool / claim-generator values of AI tools.
KNOWN_GENERATORS = (
    "stable diffusion",
    "stablediffusion",
    "automatic1111",
    "comfyui",
    "invokeai",
    "novelai",
    "midjourney",
    "dall-e",
    "dall·e",
    "dalle",
    "openai",
    "chatgpt",
    "gpt-4o",
    "adobe firefly",
    "firefly",
    "imagen",
    "gemini",
    "leonardo.ai",
    "runway",
    "stability ai",
    "sdxl",
    "flux",
    "fooocus",
    "draw things",
    "diffusionbee",
    "bing image creator",
    "ideogram",
    "craiyon",
    "nightcafe",
    "dreamstudio",
    "playground ai",
    "grok",
)
# PNG text keys written by generators: key -> who writes it.
GENERATOR_TEXT_KEYS = {
    "parameters": "Stable Diffusion web UI (AUTOMATIC1111/Forge/Fooocus) generation parameters",
    "prompt": "ComfyUI prompt graph",
    "workflow": "ComfyUI workflow",
    "invokeai_metadata": "InvokeAI metadata",
    "sd-metadata": "InvokeAI metadata",
    "dream": "InvokeAI (legacy) dream command",
    "fooocus_scheme": "Fooocus metadata",
    "generation_data": "generation metadata",
}
# Markers showing a text value really is generation settings, not a coincidental key name.
_GENERATION_MARKERS = re.compile(
    r"\b(steps|sampler|cfg scale|seed|negative prompt|class_type|model hash)\b", re.IGNORECASE
)
# IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/): score, confidence.
SOURCE_TYPES = {
    "trainedAlgorithmicMedia": (0.97, 0.9, "created by a trained AI model"),
    "compositeWithTrainedAlgorithmicMedia": (0.75, 0.85, "composite including AI-generated parts"),
    "compositeSynthetic": (0.6, 0.6, "composite including synthetic parts"),
    "algorithmicMedia": (0.5, 0.5, "created by an algorithm (not a trained model)"),
    "digitalCapture": (0.05, 0.4, "declared a camera capture"),
}
_SOURCE_TYPE_TEXT = re.compile(
    # No word boundary at the end: in CBOR the next key follows without a separator.
    rb"digitalsourcetype/(" + b"|".join(k.encode() for k in SOURCE_TYPES) + rb")"
)
_XMP_PACKET = re.compile(rb"<x:xmpmeta[\s\S]{0,1000000}?</x:xmpmeta>")
_XMP_FIELDS = ("DigitalSourceType", "CreatorTool", "Software")
EXIF_SOFTWARE = 0x0131
EXIF_DESCRIPTION = 0x010E
EXIF_MAKE = 0x010F
EXIF_MODEL = 0x0110
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_METADATA = (0.1, 0.1)
# A declaration signed by a trusted signer and bound to these very bytes: as sure as metadata gets.
VERIFIED_CONFIDENCE = 0.9
# Anyone can make a key and sign "camera capture": an untrusted signer's word counts little.
UNTRUSTED_CONFIDENCE = 0.2
# A manifest that fails validation says nothing about the asset: unknown, barely weighed.
VOID_MANIFEST = (0.5, 0.1)


@dataclass(frozen=True)
class Finding:
    """One piece of provenance metadata: where it was, what it says, what it implies."""

    source: str
    quote: str
    meaning: str
    score: float
    confidence: float

    def line(self) -> str:
        return f'{self.source}: "{self.quote}" ({self.meaning})'


@dataclass
class MediaReport:
    index: int
    kind: str = ""
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    score: float | None = None
    confidence: float = 0.0
    c2pa_validation: Validation = "no_manifest"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProvenanceAnalyzer:
    """Scores each image by its strongest provenance finding; the post by its worst image."""

    name = AI_GENERATED
    version = "metadata-2 (C2PA validated)"

    def __init__(self, trust_anchors_pem: str | None = None) -> None:
        """trust_anchors_pem: C2PA trust anchors (PEM); None: C2PA_TRUST_ANCHORS_FILE's."""
        self.config_error = ""
        if trust_anchors_pem is None:
            from trustcard.config import get_settings

            path = get_settings().C2PA_TRUST_ANCHORS_FILE
            try:
                trust_anchors_pem = load_trust_anchors(path)
            except (OSError, ValueError) as exc:
                # Fail this stage with the reason: not the whole pipeline, nor quietly trust none.
                self.config_error = f"C2PA_TRUST_ANCHORS_FILE unusable: {exc}"
                trust_anchors_pem = ""
        self.trust_anchors_pem = trust_anchors_pem

    def analyze(self, content: PostContent) -> Signal:
        if self.config_error:
            raise RuntimeError(self.config_error)
        reports = [
            inspect_media(index, item, self.trust_anchors_pem)
            for index, item in enumerate(content.media, 1)
        ]
        scored = [r for r in reports if r.score is not None]
        evidence = [f"media {r.index} ({r.kind}): {line}" for r in reports for line in _lines(r)]
        data = {"media": [r.as_dict() for r in reports]}
        if not scored:
            return Signal(
                name=self.name,
                score=None,
                confidence=0.0,
                status="unavailable",
                evidence=evidence,
                data=data,
                detail="no image to inspect" if content.media else "the post has no media",
            )
        worst = max(scored, key=lambda r: (r.score or 0.0) * r.confidence)
        assert worst.score is not None
        return Signal(
            name=self.name,
            score=worst.score,
            confidence=worst.confidence,
            evidence=evidence,
            data=data,
            detail=f"{len(scored)} of {len(reports)} media inspected; worst: media {worst.index}",
        )


def _lines(report: MediaReport) -> list[str]:
    return [finding.line() for finding in report.findings] + report.notes


def inspect_media(index: int, item: MediaItem, trust_anchors_pem: str = "") -> MediaReport:
    """The provenance findings of one media item, or a note saying why it was not inspected."""
    report = MediaReport(index=index, kind=item.content_type or "unknown type")
    if item.data is None:
        report.notes.append(item.error or "no bytes to inspect")
        return report
    data = item.data
    try:
        with Image.open(io.BytesIO(data)) as image:
            report.kind = f"{image.format} {image.width}x{image.height}"
            mime_type = image.get_format_mimetype() or item.content_type
            report.findings.extend(_image_findings(image))
    except UnidentifiedImageError:
        return _inspect_other_format(report, item, data, trust_anchors_pem)
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        report.kind = "unreadable image"
        report.notes.append(f"image could not be read ({type(exc).__name__}: {exc})"[:300])
        return report
    _add_embedded_findings(report, data, mime_type, trust_anchors_pem)
    _score(report)
    return report


def _inspect_other_format(
    report: MediaReport, item: MediaItem, data: bytes, trust_anchors_pem: str
) -> MediaReport:
    """Bytes Pillow cannot open (video, HEIC, not media at all): only embedded XMP/C2PA count."""
    _add_embedded_findings(report, data, item.content_type, trust_anchors_pem)
    if report.findings or report.c2pa_validation != "no_manifest":
        report.kind = f"{item.content_type or 'unrecognised format'}, {len(data)} bytes"
        report.notes.append("not an image Pillow reads: only embedded XMP and C2PA were searched")
        _score(report)
    elif item.is_video:
        report.notes.append("video without embedded XMP or C2PA: its frames are not inspected")
    else:
        report.kind = "not an image"
        report.notes.append(
            f"not an image format Pillow reads ({len(data)} bytes starting {data[:16]!r}), "
            "and no embedded XMP or C2PA: not inspected"
        )
    return report


def _add_embedded_findings(
    report: MediaReport, data: bytes, mime_type: str, trust_anchors_pem: str
) -> None:
    manifest = c2pa_manifest_bytes(data)
    if manifest is not None:
        declaration = read_manifest(data, mime_type, trust_anchors_pem)
        if declaration.validation == "no_manifest":  # C2PA boxes, but no manifest in them
            declaration = Declaration("invalid_signature", "C2PA data holding no readable manifest")
        report.c2pa_validation = declaration.validation
        report.findings.extend(_c2pa_findings(declaration))
        if declaration.validation in ("invalid_signature", "asset_tampered"):
            report.notes.append(
                f"C2PA manifest [{declaration.validation}]: {declaration.reason[:300]}; "
                "what it declares is ignored"
            )
    findings = [*report.findings, *_xmp_findings(data)]
    report.findings = findings + list(_raw_source_type_findings(data, findings, manifest))


def _score(report: MediaReport) -> None:
    """Strongest finding's score; agreeing AI findings raise the confidence (capped at 0.95)."""
    if not report.findings and report.c2pa_validation in ("invalid_signature", "asset_tampered"):
        report.score, report.confidence = VOID_MANIFEST
        return
    if not report.findings:
        report.score, report.confidence = NO_METADATA
        report.notes.append(
            "no provenance metadata found: absence of provenance proves nothing (uploads, "
            "screenshots and re-encoding strip it)"
        )
        return
    strongest = max(report.findings, key=lambda f: (f.score, f.confidence))
    report.score = strongest.score
    agreeing = [f for f in report.findings if (f.score >= 0.5) == (strongest.score >= 0.5)]
    doubt = 1.0
    for finding in agreeing:
        doubt *= 1.0 - finding.confidence
    report.confidence = round(min(0.95, 1.0 - doubt), 3)


def _image_findings(image: Image.Image) -> Iterator[Finding]:
    for key, value in _text_entries(image):
        lower = key.lower()
        if lower in GENERATOR_TEXT_KEYS:
            real = bool(_GENERATION_MARKERS.search(value))
            yield Finding(
                f"{image.format} text chunk {key!r}",
                _quote(value),
                GENERATOR_TEXT_KEYS[lower] + ("" if real else ", without generation settings"),
                0.95 if real else 0.8,
                0.85 if real else 0.5,
            )
        elif lower in ("software", "comment", "description", "source") and (
            generator := _generator_named(value)
        ):
            yield Finding(
                f"{image.format} text chunk {key!r}", _quote(value), f"names {generator}", 0.9, 0.75
            )
    exif = image.getexif()
    for tag, label in (
        (EXIF_SOFTWARE, "EXIF Software"),
        (EXIF_DESCRIPTION, "EXIF ImageDescription"),
    ):
        exif_value = exif.get(tag)
        if isinstance(exif_value, str) and (generator := _generator_named(exif_value)):
            yield Finding(label, _quote(exif_value), f"names {generator}", 0.9, 0.75)


def _text_entries(image: Image.Image) -> Iterator[tuple[str, str]]:
    entries: dict[Any, Any] = dict(image.info)
    if image.format == "PNG":
        # Text chunks after the pixel data are only read by .text (which decodes the image).
        with contextlib.suppress(OSError, ValueError, SyntaxError):
            entries.update(image.text)  # type: ignore[attr-defined]
    for key, value in entries.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(key, str) and isinstance(value, str) and key.lower() != "xml:com.adobe.xmp":
            yield key, value


def _xmp_findings(data: bytes) -> Iterator[Finding]:
    for packet in _XMP_PACKET.findall(data)[:5]:
        try:
            root = safe_xml.fromstring(packet)
        except (safe_xml.ParseError, DefusedXmlException, ValueError):
            continue  # the raw search for source types still covers a malformed packet
        for field_name, value in _xmp_values(root):
            if field_name == "DigitalSourceType":
                kind = value.rstrip("/").rsplit("/", 1)[-1]
                if kind in SOURCE_TYPES:
                    score, confidence, meaning = SOURCE_TYPES[kind]
                    yield Finding(
                        "XMP Iptc4xmpExt:DigitalSourceType", value, meaning, score, confidence
                    )
            elif generator := _generator_named(value):
                yield Finding(f"XMP {field_name}", _quote(value), f"names {generator}", 0.9, 0.75)


def _xmp_values(root: Element) -> Iterator[tuple[str, str]]:
    for element in root.iter():
        local = element.tag.rsplit("}", 1)[-1]
        if local in _XMP_FIELDS and element.text and element.text.strip():
            yield local, element.text.strip()
        for attribute, value in element.attrib.items():
            name = attribute.rsplit("}", 1)[-1]
            if name in _XMP_FIELDS and value.strip():
                yield name, value.strip()


def _raw_source_type_findings(
    data: bytes, found: list[Finding], manifest: bytes | None
) -> Iterator[Finding]:
    """Source types written outside a parsable XMP packet or C2PA manifest (e.g. broken XMP)."""
    seen = {f.quote.rstrip("/").rsplit("/", 1)[-1] for f in found}
    # What a manifest declares was weighed by its validation, never again as bare text.
    seen |= {m.group(1).decode() for m in _SOURCE_TYPE_TEXT.finditer(manifest or b"")}
    for kind in dict.fromkeys(m.group(1).decode() for m in _SOURCE_TYPE_TEXT.finditer(data)):
        if kind not in seen:
            score, confidence, meaning = SOURCE_TYPES[kind]
            yield Finding("IPTC digital source type in the file", kind, meaning, score, confidence)


def _c2pa_findings(declaration: Declaration) -> Iterator[Finding]:
    """What a manifest declares, weighed by how its validation went."""
    validation = declaration.validation
    if validation in ("no_manifest", "invalid_signature", "asset_tampered"):
        return
    trusted = validation == "valid"
    signer = declaration.signer or "unnamed signer"
    label = f"C2PA manifest [{validation}] signed by {signer!r}"
    why = "" if trusted else f" — declared by a signer not on the trust list ({declaration.reason})"
    kinds = [t.rstrip("/").rsplit("/", 1)[-1] for t in declaration.source_types]
    declared = [k for k in dict.fromkeys(kinds) if k in SOURCE_TYPES]
    for kind in declared:
        score, confidence, meaning = SOURCE_TYPES[kind]
        weight = max(confidence, VERIFIED_CONFIDENCE) if trusted else UNTRUSTED_CONFIDENCE
        yield Finding(label, kind, meaning + why, score, weight)
    agents = list(dict.fromkeys([declaration.claim_generator, *declaration.software_agents]))
    ai_agents = [(agent, named) for agent in agents if agent and (named := _generator_named(agent))]
    for agent, named in ai_agents[:2]:
        weight = 0.85 if trusted else UNTRUSTED_CONFIDENCE
        yield Finding(f"{label} generator", _quote(agent), f"names {named}{why}", 0.9, weight)
    if not declared and not ai_agents:
        yield Finding(
            label,
            _quote("; ".join(a for a in agents if a)) or "claim generator unnamed",
            "content credentials present, declaring no AI source" + why,
            0.1,
            0.5 if trusted else 0.1,
        )


def c2pa_manifest_bytes(data: bytes) -> bytes | None:
    """The JUMBF bytes of a C2PA manifest store embedded in a JPEG, PNG or WebP, if any."""
    if data.startswith(b"\xff\xd8"):
        payload = b"".join(segment for marker, segment in _jpeg_segments(data) if marker == 0xEB)
    elif data.startswith(PNG_SIGNATURE):
        payload = b"".join(body for kind, body in _png_chunks(data) if kind == b"caBX")
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        payload = b"".join(body for kind, body in _riff_chunks(data) if kind == b"C2PA")
    else:
        payload = data if b"jumb" in data else b""
    return payload if b"jumb" in payload and b"c2pa" in payload else None


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xDA:  # start of scan: no more metadata segments
            return
        length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        yield marker, data[offset + 4 : offset + 2 + length]
        offset += 2 + length


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        kind = data[offset + 4 : offset + 8]
        yield kind, data[offset + 8 : offset + 8 + length]
        if kind == b"IEND":
            return
        offset += 12 + length


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = 12
    while offset + 8 <= len(data):
        kind = data[offset : offset + 4]
        length = struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        yield kind, data[offset + 8 : offset + 8 + length]
        offset += 8 + length + (length & 1)


def _generator_named(value: str) -> str | None:
    lower = value.lower()
    for name in KNOWN_GENERATORS:
        if re.search(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])", lower):
            return name
    return None


def _quote(value: str) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= QUOTE_CHARS else flat[: QUOTE_CHARS - 1] + "…"
