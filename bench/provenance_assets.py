"""Images with and without C2PA manifests, signed on the spot by a throw-away test CA.

Shared by the provenance tests and `python -m bench.accuracy`: nothing binary is committed, every
asset is made here with `cryptography` (keys, certificates), Pillow (pixels) and c2pa-python's
Builder (the manifest). The signing certificate carries what the C2PA trust model demands of a
claim signer: an end-entity (not CA) certificate, digitalSignature key usage and an allowed EKU
(emailProtection here), issued by a CA rather than self-signed.
"""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AI_SOURCE = IPTC + "trainedAlgorithmicMedia"
CAMERA_SOURCE = IPTC + "digitalCapture"


@dataclass(frozen=True)
class SigningAuthority:
    """A root CA (the trust anchor to configure) and a claim-signing certificate it issued."""

    anchor_pem: str
    chain_pem: bytes  # signing certificate, then the CA: what goes into the manifest
    key_pem: bytes

    def signer(self) -> c2pa.Signer:
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.chain_pem, self.key_pem, None)
        return c2pa.Signer.from_info(info)


def make_authority(name: str) -> SigningAuthority:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test root CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} claim signer"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
        ]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return SigningAuthority(
        anchor_pem=ca.public_bytes(pem).decode(),
        chain_pem=leaf.public_bytes(pem) + ca.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def plain_image(seed: int, image_format: str = "JPEG", *, exif_software: str = "") -> bytes:
    """A small image whose pixels depend on seed (so assets differ), without provenance."""
    image = Image.new("RGB", (64, 48), ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    for x in range(0, 64, 4):
        image.putpixel((x, (x * seed) % 48), (255, 255, 255))
    out = io.BytesIO()
    exif = Image.Exif()
    if exif_software:
        exif[0x0131] = exif_software
    image.save(out, image_format, exif=exif)
    return out.getvalue()


def manifest_definition(generator: str, source_type: str) -> dict[str, Any]:
    """A C2PA 2 manifest whose c2pa.created action declares the IPTC digital source type."""
    return {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "trustcard test asset",
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": source_type,
                            "softwareAgent": {"name": generator},
                        }
                    ]
                },
            }
        ],
    }


def signed_image(
    image: bytes, authority: SigningAuthority, generator: str, source_type: str, mime: str
) -> bytes:
    """image with a manifest signed by authority's claim signer embedded."""
    source, dest = io.BytesIO(image), io.BytesIO()
    with (
        c2pa.Builder(manifest_definition(generator, source_type)) as builder,
        authority.signer() as signer,
    ):
        builder.sign(signer, mime, source, dest)
    return dest.getvalue()


def tampered(jpeg: bytes) -> bytes:
    """The same signed JPEG with pixels changed after signing (the manifest left as it was)."""
    if not jpeg.endswith(b"\xff\xd9"):
        raise ValueError("not a JPEG ending in EOI")
    data = bytearray(jpeg)
    # The bytes just before EOI are entropy-coded pixel data: flip the low bit of a few
    # (never making or breaking a 0xFF marker byte).
    for offset in range(len(data) - 12, len(data) - 2):
        if data[offset] not in (0xFE, 0xFF) and data[offset - 1] != 0xFF:
            data[offset] ^= 0x01
    return bytes(data)


def claim_edited(signed: bytes) -> bytes:
    """The signed asset with one byte of the manifest's claim (its title) changed after signing."""
    title = manifest_definition("", "")["title"].encode()
    if signed.count(title) != 1:
        raise ValueError("the claim's title is not in the asset exactly once")
    return signed.replace(title, title[:-1] + b"X")
