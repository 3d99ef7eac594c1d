"""C2PA validation in a real worker: the trust-anchor setting reaches the pool child."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench.provenance_assets import (
    AI_SOURCE,
    CAMERA_SOURCE,
    SigningAuthority,
    make_authority,
    plain_image,
    signed_image,
    tampered,
)

from tests.integration.test_analysis_api import b64, new_shortcode, post_url, stage, submit
from tests.integration.test_analysis_api import wait_for_analysis as wait
from tests.stack import ServiceStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trusted() -> SigningAuthority:
    return make_authority("Worker Test CA")


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, trusted: SigningAuthority
) -> Iterator[httpx.Client]:
    workdir = Path(tmp_path_factory.mktemp("c2pa"))
    (workdir / "anchors.pem").write_text(trusted.anchor_pem)
    stack = ServiceStack(
        workdir=workdir, env_overrides={"C2PA_TRUST_ANCHORS_FILE": str(workdir / "anchors.pem")}
    )
    try:
        stack.start()
        with stack.client() as http:
            yield http
    finally:
        stack.stop()


def test_worker_validates_manifests_against_the_configured_anchors(
    api: httpx.Client, trusted: SigningAuthority
) -> None:
    stranger = make_authority("Stranger")
    camera = signed_image(plain_image(1), trusted, "Camera firmware", CAMERA_SOURCE, "image/jpeg")
    media = [
        camera,
        signed_image(plain_image(2), trusted, "Image model", AI_SOURCE, "image/jpeg"),
        tampered(camera),
        signed_image(plain_image(3), stranger, "Camera firmware", CAMERA_SOURCE, "image/jpeg"),
    ]
    submitted = submit(
        api,
        post_url(new_shortcode()),
        content={"caption": "", "media": [{"data_base64": b64(m)} for m in media]},
    )

    done = wait(api, submitted["analysis_id"], {"completed", "failed"})

    assert done["status"] == "completed", done
    signal = stage(done, "ai_generated")["signal"]
    assert [m["c2pa_validation"] for m in signal["data"]["media"]] == [
        "valid",
        "valid",
        "asset_tampered",
        "untrusted_signer",
    ]
    # The post's signal is its worst image: the trusted generative one.
    assert (signal["score"], signal["confidence"]) == (0.97, 0.9)
