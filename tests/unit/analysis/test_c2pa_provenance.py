"""C2PA provenance through run_pipeline, on assets these tests sign with c2pa-python's Builder.

A throw-away CA (bench.provenance_assets) is written as the trust-anchor file the setting names;
a second, unlisted CA plays the forger. Each case must land on its side of the ai_generated signal.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.provenance_assets import (
    AI_SOURCE,
    CAMERA_SOURCE,
    SigningAuthority,
    claim_edited,
    make_authority,
    plain_image,
    signed_image,
    tampered,
)

from trustcard.analysis.c2pa_verify import read_manifest
from trustcard.analysis.pipeline import PipelineConfig, run_pipeline
from trustcard.analysis.supplied import SuppliedContent
from trustcard.config import get_settings

URL = "https://www.instagram.com/p/CxYz123AbCd/"


@pytest.fixture(scope="module")
def trusted() -> SigningAuthority:
    return make_authority("Trusted Camera Co")


@pytest.fixture(scope="module")
def stranger() -> SigningAuthority:
    return make_authority("Stranger")


@pytest.fixture(autouse=True)
def trust_anchor_file(
    trusted: SigningAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    anchors = tmp_path / "c2pa-anchors.pem"
    anchors.write_text(trusted.anchor_pem)
    monkeypatch.setenv("C2PA_TRUST_ANCHORS_FILE", str(anchors))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _ai_signal(image: bytes) -> dict[str, Any]:
    supplied = SuppliedContent.model_validate(
        {"caption": "", "media": [{"data_base64": base64.b64encode(image).decode()}]}
    )
    result = run_pipeline(URL, supplied, claims=[], config=PipelineConfig(plugins=[]))
    stage = next(s for s in result.stages if s.name == "ai_generated")
    assert stage.signal is not None
    return stage.signal


def _validation(signal: dict[str, Any]) -> str:
    return str(signal["data"]["media"][0]["c2pa_validation"])


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_trusted_generative_manifest_declares_ai(
    trusted: SigningAuthority, fmt: str, mime: str
) -> None:
    image = signed_image(plain_image(1, fmt), trusted, "Test Image Model", AI_SOURCE, mime)

    signal = _ai_signal(image)

    assert _validation(signal) == "valid"
    assert signal["score"] == 0.97
    assert signal["confidence"] >= 0.9
    assert "C2PA manifest [valid] signed by 'Trusted Camera Co'" in signal["evidence"][0]
    assert "trainedAlgorithmicMedia" in signal["evidence"][0]


def test_trusted_camera_capture_declares_camera(trusted: SigningAuthority) -> None:
    image = signed_image(plain_image(2), trusted, "Camera firmware", CAMERA_SOURCE, "image/jpeg")

    signal = _ai_signal(image)

    assert _validation(signal) == "valid"
    assert signal["score"] == 0.05
    assert signal["confidence"] >= 0.9
    assert "declared a camera capture" in signal["evidence"][0]


def test_asset_changed_after_signing_is_tampered_and_its_camera_claim_ignored(
    trusted: SigningAuthority,
) -> None:
    image = signed_image(plain_image(3), trusted, "Camera firmware", CAMERA_SOURCE, "image/jpeg")

    signal = _ai_signal(tampered(image))

    assert _validation(signal) == "asset_tampered"
    assert (signal["score"], signal["confidence"]) == (0.5, 0.1)
    evidence = " ".join(signal["evidence"])
    assert "assertion.dataHash.mismatch" in evidence
    assert "what it declares is ignored" in evidence
    assert "declared a camera capture" not in evidence


def test_a_claim_changed_after_signing_fails_its_signature(trusted: SigningAuthority) -> None:
    image = signed_image(plain_image(7), trusted, "Camera firmware", CAMERA_SOURCE, "image/jpeg")

    signal = _ai_signal(claim_edited(image))

    assert _validation(signal) == "invalid_signature"
    assert (signal["score"], signal["confidence"]) == (0.5, 0.1)
    assert "claimSignature.mismatch" in " ".join(signal["evidence"])


def test_untrusted_signer_claiming_a_camera_counts_little(stranger: SigningAuthority) -> None:
    image = signed_image(plain_image(4), stranger, "Camera firmware", CAMERA_SOURCE, "image/jpeg")

    signal = _ai_signal(image)

    assert _validation(signal) == "untrusted_signer"
    assert signal["confidence"] == 0.2
    assert "signer not on the trust list" in signal["evidence"][0]
    assert "signingCredential.untrusted" in signal["evidence"][0]


def test_without_a_trust_list_even_the_test_ca_is_untrusted(
    trusted: SigningAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C2PA_TRUST_ANCHORS_FILE", "")
    get_settings.cache_clear()
    image = signed_image(plain_image(5), trusted, "Test Image Model", AI_SOURCE, "image/jpeg")

    assert _validation(_ai_signal(image)) == "untrusted_signer"


def test_a_missing_anchor_file_fails_the_stage_with_the_reason(
    trusted: SigningAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C2PA_TRUST_ANCHORS_FILE", str(tmp_path / "absent.pem"))
    get_settings.cache_clear()
    supplied = SuppliedContent.model_validate(
        {"caption": "hello", "media": [{"data_base64": base64.b64encode(plain_image(8)).decode()}]}
    )

    result = run_pipeline(URL, supplied, claims=[], config=PipelineConfig(plugins=[]))

    stage = next(s for s in result.stages if s.name == "ai_generated")
    assert stage.status == "failed"
    assert "C2PA_TRUST_ANCHORS_FILE unusable" in stage.detail
    assert "absent.pem" in stage.detail
    assert result.trust.label  # the other stages and the score still ran


def test_reader_reports_no_manifest_for_a_plain_image(trusted: SigningAuthority) -> None:
    assert read_manifest(plain_image(6), "image/jpeg", trusted.anchor_pem).validation == (
        "no_manifest"
    )
