"""Image files with and without provenance metadata, generated with Pillow for the tests."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, PngImagePlugin

SD_PARAMETERS = (
    "a cat astronaut floating in space, highly detailed\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 64x64, Model hash: 6ce0161689"
)
IPTC_AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
IPTC_CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
IPTC_COMPOSITE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)


def _picture() -> Image.Image:
    # A gradient, so the files are not trivially uniform.
    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4, y * 5, (x + y) * 2) for y in range(48) for x in range(64)])
    return image


def png_with_text(*, compressed: bool = False, **chunks: str) -> bytes:
    """A PNG with tEXt chunks (zTXt when compressed, as some generators write them)."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=compressed)
    out = io.BytesIO()
    _picture().save(out, "PNG", pnginfo=info)
    return out.getvalue()


def xmp_packet(source_type: str | None = None, creator_tool: str | None = None) -> bytes:
    fields = ""
    if source_type:
        fields += f"<Iptc4xmpExt:DigitalSourceType>{source_type}</Iptc4xmpExt:DigitalSourceType>"
    attributes = f' xmp:CreatorTool="{creator_tool}"' if creator_tool else ""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        f'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"{attributes}>'
        f"{fields}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def jpeg(*, xmp: bytes | None = None, software: str | None = None) -> bytes:
    exif = Image.Exif()
    if software:
        exif[0x0131] = software
    out = io.BytesIO()
    options: dict[str, object] = {"quality": 85, "exif": exif.tobytes()}
    if xmp is not None:
        options["xmp"] = xmp
    _picture().save(out, "JPEG", **options)
    return out.getvalue()


def clean_jpeg() -> bytes:
    out = io.BytesIO()
    _picture().save(out, "JPEG", quality=85)
    return out.getvalue()


def _cbor_text(text: str) -> bytes:
    raw = text.encode()
    return (bytes([0x60 + len(raw)]) if len(raw) < 24 else b"\x78" + bytes([len(raw)])) + raw


def c2pa_jumbf(claim_generator: str, source_type: str | None = None, *, version: int = 1) -> bytes:
    """A minimal JUMBF superbox labelled c2pa holding a CBOR claim and actions.

    Not a signed manifest: enough structure for presence, generator and source-type reading,
    laid out as C2PA writes it (1.x: claim_generator text; 2.x: claim_generator_info map).
    """
    if version == 1:
        cbor = b"\xa2" + _cbor_text("claim_generator") + _cbor_text(claim_generator)
    else:  # an indefinite-length map, as c2pa-rs 0.5x writes claim_generator_info
        cbor = b"\xa2" + _cbor_text("claim_generator_info") + b"\xbf" + _cbor_text("name")
        cbor += _cbor_text(claim_generator) + _cbor_text("version") + _cbor_text("1.0") + b"\xff"
    if source_type:
        # The next key follows the value directly, as in a real actions assertion.
        cbor += _cbor_text("digitalSourceType") + _cbor_text(source_type)
        cbor += _cbor_text("allActionsIncluded") + b"\xf5"
    label = b"c2pa\x00"
    description = struct.pack(">I", 8 + 16 + 1 + len(label)) + b"jumd" + b"\x00" * 16 + b"\x03"
    description += label
    claim = struct.pack(">I", 8 + len(cbor)) + b"cbor" + cbor
    body = description + claim
    return struct.pack(">I", 8 + len(body)) + b"jumb" + body


def jpeg_with_c2pa(jumbf: bytes) -> bytes:
    """A JPEG with the JUMBF in one APP11 segment (JPEG XT box header: CI, En, Z)."""
    plain = clean_jpeg()
    payload = b"JP" + b"\x02\x11" + struct.pack(">I", 1) + jumbf
    segment = b"\xff\xeb" + struct.pack(">H", len(payload) + 2) + payload
    return plain[:2] + segment + plain[2:]


def png_with_c2pa(jumbf: bytes) -> bytes:
    """A PNG with a caBX chunk (where C2PA stores its manifest in PNG) before IEND."""
    plain = png_with_text()
    chunk = struct.pack(">I", len(jumbf)) + b"caBX" + jumbf
    chunk += struct.pack(">I", zlib.crc32(b"caBX" + jumbf) & 0xFFFFFFFF)
    iend = plain.rindex(b"IEND") - 4
    return plain[:iend] + chunk + plain[iend:]


def webp(*, xmp: bytes | None = None) -> bytes:
    out = io.BytesIO()
    if xmp is None:
        _picture().save(out, "WEBP")
    else:
        _picture().save(out, "WEBP", xmp=xmp)
    return out.getvalue()


def mp4_with_c2pa(jumbf: bytes | None) -> bytes:
    """The start of an MP4 (ftyp box) with the manifest in a uuid box, as C2PA stores it in BMFF."""
    ftyp = struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00" + b"isomiso2"
    if jumbf is None:
        return ftyp + struct.pack(">I", 16) + b"free" + b"\x00" * 8
    uuid_box = b"uuid" + bytes.fromhex("d8fec3d61b0e483c92975828877ec481") + b"\x00" * 4 + jumbf
    return ftyp + struct.pack(">I", 4 + len(uuid_box)) + uuid_box
