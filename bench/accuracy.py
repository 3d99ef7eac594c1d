"""`python -m bench.accuracy [--quick]`: precision and recall of the analysis signals.

A small labelled set, made here on every run (nothing binary is committed), goes through the real
`run_pipeline`, and each signal's call is compared with the label:

- ai_generated: images labelled AI-generated or camera, with and without provenance: C2PA
  manifests signed by a trusted test CA (whose root is written as C2PA_TRUST_ANCHORS_FILE), by an
  unlisted CA (a forger, or a maker the operator does not trust), manifests whose asset was
  changed after signing, PNG generator chunks, XMP/EXIF fields, and bare pixels. The signal calls
  "AI" when score >= 0.5 and "camera" when score < 0.5, each only at confidence >= the threshold;
  otherwise it abstains (abstentions lower recall, not precision).
- fact_check: captions against a claims table: exact repeats and paraphrases (should match),
  negated ("it is false that ...") and unrelated captions (should not). It "flags" a caption when
  the signal's score is >= 0.5.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.provenance_assets import (
    AI_SOURCE,
    CAMERA_SOURCE,
    SigningAuthority,
    make_authority,
    plain_image,
    signed_image,
    tampered,
)

URL = "https://www.instagram.com/p/CxYz123AbCd/"
THRESHOLDS = (0.3, 0.5)
FLAG_SCORE = 0.5


@dataclass(frozen=True)
class ImageCase:
    kind: str  # how the asset was made, for the per-kind table
    label: str  # "ai" or "camera": the truth
    make: Callable[[int], bytes]


@dataclass(frozen=True)
class CaptionCase:
    kind: str  # exact, paraphrase, negated, unrelated
    caption: str
    repeats: bool  # the truth: does the caption repeat a rated claim?


def _xmp_source_type(seed: int, source_type: str) -> bytes:
    import io

    from PIL import Image

    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'Iptc4xmpExt:DigitalSourceType="{source_type}"/></rdf:RDF></x:xmpmeta>'
    )
    out = io.BytesIO()
    Image.open(io.BytesIO(plain_image(seed))).save(out, "JPEG", xmp=xmp.encode())
    return out.getvalue()


def _png_parameters(seed: int) -> bytes:
    import io

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    out = io.BytesIO()
    Image.open(io.BytesIO(plain_image(seed, "PNG"))).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def image_cases(trusted: SigningAuthority, stranger: SigningAuthority) -> list[ImageCase]:
    def sign(ca: SigningAuthority, source: str, fmt: str = "JPEG") -> Callable[[int], bytes]:
        mime = "image/png" if fmt == "PNG" else "image/jpeg"
        generator = "Test Image Model" if source == AI_SOURCE else "Test Camera firmware"
        return lambda seed: signed_image(plain_image(seed, fmt), ca, generator, source, mime)

    return [
        ImageCase("C2PA trusted, generative (JPEG)", "ai", sign(trusted, AI_SOURCE)),
        ImageCase("C2PA trusted, generative (PNG)", "ai", sign(trusted, AI_SOURCE, "PNG")),
        ImageCase("C2PA trusted, camera capture", "camera", sign(trusted, CAMERA_SOURCE)),
        ImageCase("C2PA untrusted, generative", "ai", sign(stranger, AI_SOURCE)),
        ImageCase("C2PA untrusted, camera capture", "camera", sign(stranger, CAMERA_SOURCE)),
        # A generator's output dressed as a camera capture with a key nobody trusts.
        ImageCase("C2PA forged camera claim on AI", "ai", sign(stranger, CAMERA_SOURCE)),
        # A trusted camera's manifest kept while the pixels were swapped for generated ones.
        ImageCase(
            "C2PA camera manifest, pixels changed",
            "ai",
            lambda seed: tampered(sign(trusted, CAMERA_SOURCE)(seed)),
        ),
        ImageCase("PNG generator parameters", "ai", _png_parameters),
        ImageCase("XMP DigitalSourceType AI", "ai", lambda s: _xmp_source_type(s, AI_SOURCE)),
        ImageCase(
            "EXIF Software names a generator",
            "ai",
            lambda s: plain_image(s, exif_software="Midjourney v6"),
        ),
        ImageCase("AI, metadata stripped", "ai", plain_image),
        ImageCase("camera, metadata stripped", "camera", plain_image),
        ImageCase(
            "camera, EXIF Software only",
            "camera",
            lambda s: plain_image(s, exif_software="Camera firmware 1.2"),
        ),
    ]


# Rated claims and, per claim, captions of each kind (what a post would say).
CLAIMS: list[tuple[str, dict[str, str]]] = [
    (
        "Vaccines contain microchips",
        {
            "exact": "Vaccines contain microchips #wakeup",
            "paraphrase": "They are putting tracking chips inside the covid jabs",
            "negated": "It is false that vaccines contain microchips, stop sharing this",
            "unrelated": "Sunset at the lake with friends",
        },
    ),
    (
        "The moon landing was faked",
        {
            "exact": "The moon landing was faked!!!",
            "paraphrase": "NASA never went to the moon, it was all filmed in a studio",
            "negated": "Debunked: the claim that the moon landing was faked",
            "unrelated": "Homemade pasta night, recipe in bio",
        },
    ),
    (
        "Drinking bleach cures covid",
        {
            "exact": "Drinking bleach cures covid, share before they delete it",
            "paraphrase": "A sip of chlorine solution kills the coronavirus in your body",
            "negated": "No, drinking bleach does not cure covid. Please don't.",
            "unrelated": "New running shoes, 10k personal best today",
        },
    ),
    (
        "5G towers spread the coronavirus",
        {
            "exact": "5G towers spread the coronavirus",
            "paraphrase": "The new mobile masts are what is making people sick with covid",
            "negated": "Fact check: 5G towers do not spread the coronavirus",
            "unrelated": "Our cat turned three today",
        },
    ),
]


def caption_cases() -> list[CaptionCase]:
    return [
        CaptionCase(kind, caption, kind in ("exact", "paraphrase"))
        for _, captions in CLAIMS
        for kind, caption in captions.items()
    ]


@dataclass
class Tally:
    labelled: int = 0
    called: int = 0  # the signal called this class
    correct: int = 0

    def precision(self) -> str:
        return f"{self.correct / self.called:.2f}" if self.called else "n/a"

    def recall(self) -> str:
        return f"{self.correct / self.labelled:.2f}" if self.labelled else "n/a"


def _signal(caption: str, images: list[bytes], claims: list[Any]) -> dict[str, Any]:
    from trustcard.analysis.pipeline import PipelineConfig, run_pipeline
    from trustcard.analysis.supplied import SuppliedContent

    supplied = SuppliedContent.model_validate(
        {
            "caption": caption,
            "media": [{"data_base64": base64.b64encode(i).decode()} for i in images],
        }
    )
    result = run_pipeline(URL, supplied, claims=claims, config=PipelineConfig(plugins=[]))
    return {s.name: s.signal or {} for s in result.stages}


Result = tuple[str, str, float, float]  # kind, label, score, confidence


def evaluate_images(cases: list[ImageCase], seeds: range) -> Iterator[Result]:
    """(kind, label, score, confidence) per asset."""
    for case in cases:
        for seed in seeds:
            signal = _signal("", [case.make(seed)], [])["ai_generated"]
            yield (
                case.kind,
                case.label,
                float(signal.get("score") or 0.0),
                float(signal.get("confidence") or 0.0),
            )


def image_table(results: list[Result], threshold: float) -> list[str]:
    tallies = {"ai": Tally(), "camera": Tally()}
    for _, label, score, confidence in results:
        tallies[label].labelled += 1
        if confidence >= threshold:
            call = "ai" if score >= 0.5 else "camera"
            tallies[call].called += 1
            tallies[call].correct += call == label
    lines = [
        f"ai_generated, calls at confidence >= {threshold}:",
        "| class | labelled | called | correct | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in tallies.items():
        lines.append(
            f"| {name} | {t.labelled} | {t.called} | {t.correct} | {t.precision()} | {t.recall()} |"
        )
    return lines


def per_kind_table(results: list[Result]) -> list[str]:
    lines = ["| asset | label | score | confidence |", "|---|---|---|---|"]
    seen: set[str] = set()
    for kind, label, score, confidence in results:
        if kind not in seen:
            seen.add(kind)
            lines.append(f"| {kind} | {label} | {score:.2f} | {confidence:.2f} |")
    return lines


def caption_table(cases: list[CaptionCase]) -> list[str]:
    from trustcard.analysis.claims import Claim

    claims = [Claim(i, text, "false", []) for i, (text, _) in enumerate(CLAIMS, 1)]
    flagged_by_kind: dict[str, list[bool]] = {}
    tally = Tally()
    for case in cases:
        flagged = float(_signal(case.caption, [], claims)["fact_check"].get("score") or 0.0) >= (
            FLAG_SCORE
        )
        flagged_by_kind.setdefault(case.kind, []).append(flagged)
        tally.labelled += case.repeats
        tally.called += flagged
        tally.correct += flagged and case.repeats
    lines = [
        f"fact_check, flags at score >= {FLAG_SCORE}:",
        "| captions | labelled repeats | flagged | correct | precision | recall |",
        "|---|---|---|---|---|---|",
        f"| all | {tally.labelled} | {tally.called} | {tally.correct} | {tally.precision()} "
        f"| {tally.recall()} |",
        "",
        "| caption kind | flagged / captions |",
        "|---|---|",
    ]
    for kind, flags in flagged_by_kind.items():
        lines.append(f"| {kind} | {sum(flags)} / {len(flags)} |")
    return lines


def report(quick: bool) -> str:
    trusted, stranger = make_authority("Trusted Test CA"), make_authority("Unlisted Test CA")
    with tempfile.TemporaryDirectory() as tmp:
        anchors = Path(tmp) / "anchors.pem"
        anchors.write_text(trusted.anchor_pem)
        os.environ["C2PA_TRUST_ANCHORS_FILE"] = str(anchors)
        from trustcard.analysis.provenance import ProvenanceAnalyzer
        from trustcard.config import get_settings

        get_settings.cache_clear()
        seeds = range(1, 2 if quick else 4)
        results = list(evaluate_images(image_cases(trusted, stranger), seeds))
    lines = [f"ai_generated analyzer: {ProvenanceAnalyzer.version}; {len(results)} images", ""]
    for threshold in THRESHOLDS:
        lines += [*image_table(results, threshold), ""]
    lines += ["per asset kind (first seed):", *per_kind_table(results), ""]
    lines += caption_table(caption_cases())
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one image per kind")
    print(report(parser.parse_args().quick))


if __name__ == "__main__":
    main()
