"""`python -m bench.accuracy [--quick]`: precision and recall of the analysis signals.

A small labelled set, made here on every run (nothing binary is committed), goes through the real
`run_pipeline`, and each signal's call is compared with the label:

- ai_generated: images labelled AI-generated or camera, with and without provenance: C2PA
  manifests signed by a trusted test CA (whose root is written as C2PA_TRUST_ANCHORS_FILE), by an
  unlisted CA (a forger, or a maker the operator does not trust), manifests whose asset was
  changed after signing, PNG generator chunks, XMP/EXIF fields, and bare pixels. The signal calls
  "AI" when score >= 0.5 and "camera" when score < 0.5, each only at confidence >= the threshold;
  otherwise it abstains (abstentions lower recall, not precision).
- fact_check: 64 captions written for this bench against a table of 36 rated claims: per
  labelled claim an exact repeat and a paraphrase (should be flagged), a negated caption ("it is
  false that ...", "myth:", "does not") and an unrelated one on the same topic (should not). It
  "flags" a caption when the signal's score is >= 0.5. `caption_table` takes one scorer per
  matcher, so another matcher is one more column.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.provenance_assets import (
    AI_SOURCE,
    CAMERA_SOURCE,
    SigningAuthority,
    make_authority,
    plain_image,
    signed_image,
    tampered,
)

if TYPE_CHECKING:
    from trustcard.analysis.claims import Claim

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


# Rated claims and, per claim, captions of each kind (what a post would say). Written for this
# bench: "exact" repeats the claim in the post's own words around it (inflected, with extra words),
# "paraphrase" says the same with other words, "negated" quotes it to deny or debunk it, and
# "unrelated" is an ordinary post, often on the same topic or sharing a word.
CLAIMS: list[tuple[str, dict[str, str]]] = [
    (
        "Vaccines contain microchips",
        {
            "exact": "They won't admit it but the vaccines contain microchips #wakeup",
            "paraphrase": "They are putting tracking chips inside the covid jabs",
            "negated": "It is false that vaccines contain microchips, stop sharing this",
            "unrelated": "Got my flu vaccine today, arm is a bit sore but worth it",
        },
    ),
    (
        "The moon landing was faked",
        {
            "exact": "The moon landing was faked!!! Open your eyes",
            "paraphrase": "NASA never went to the moon, it was all filmed in a studio",
            "negated": "Debunked: the claim that the moon landing was faked",
            "unrelated": "Full moon over the harbour tonight, what a view",
        },
    ),
    (
        "Drinking bleach cures covid",
        {
            "exact": "Drinking bleach cures covid, share before they delete it",
            "paraphrase": "A sip of chlorine solution kills the coronavirus in your body",
            "negated": "No, drinking bleach does not cure covid. Please don't.",
            "unrelated": "Spring cleaning day: bleach, gloves and a lot of music",
        },
    ),
    (
        "5G towers spread the coronavirus",
        {
            "exact": "Wake up people, 5G towers are spreading the coronavirus",
            "paraphrase": "The new mobile masts are what is making people sick with covid",
            "negated": "Fact check: 5G towers do not spread the coronavirus",
            "unrelated": "Finally got 5G at the cabin, streaming the match tonight",
        },
    ),
    (
        "The earth is flat",
        {
            "exact": "The earth is flat and they have lied to us for centuries",
            "paraphrase": "There is no curve on the horizon, our world is a disc",
            "negated": "Flat earthers, the earth is not flat: here is the photo from orbit",
            "unrelated": "Flat white and a croissant to start the weekend",
        },
    ),
    (
        "Chemtrails are poisoning the population",
        {
            "exact": "Look up! The chemtrails are poisoning the population every day",
            "paraphrase": "Those white lines the planes leave behind are spraying toxins on us",
            "negated": "Chemtrails poisoning the population is a conspiracy theory, those are"
            " contrails",
            "unrelated": "Plane spotting at the airport with my son this afternoon",
        },
    ),
    (
        "Climate change is a hoax",
        {
            "exact": "Climate change is a hoax to raise your taxes",
            "paraphrase": "The planet is not warming, scientists made the numbers up for funding",
            "negated": "Saying climate change is a hoax is simply false, look at the data",
            "unrelated": "Our climate strike group planted 200 trees this weekend",
        },
    ),
    (
        "Eating garlic prevents covid infection",
        {
            "exact": "Eating garlic prevents covid infection, my grandmother was right",
            "paraphrase": "A few cloves a day keep the virus away, no need for a jab",
            "negated": "WHO: there is no evidence that eating garlic prevents covid infection",
            "unrelated": "Garlic butter prawns for dinner, recipe below",
        },
    ),
    (
        "Vaccines cause autism",
        {
            "exact": "Do your research: vaccines cause autism",
            "paraphrase": "My nephew changed after his shots, the injections damage kids' brains",
            "negated": "The study claiming vaccines cause autism was retracted and its author"
            " struck off",
            "unrelated": "Autism awareness walk this Saturday, everyone welcome",
        },
    ),
    (
        "The Great Wall of China is visible from space",
        {
            "exact": "Fun fact: the Great Wall of China is visible from space",
            "paraphrase": "Astronauts can see the famous Chinese wall with bare eyes from orbit",
            "negated": "Myth: the Great Wall of China is visible from space. Astronauts say it"
            " is not.",
            "unrelated": "Hiking the Great Wall next month, any tips?",
        },
    ),
    (
        "Humans only use ten percent of their brains",
        {
            "exact": "Humans only use ten percent of their brains, imagine unlocking the rest",
            "paraphrase": "Most of your grey matter sits idle, we barely tap a tenth of it",
            "negated": "The idea that humans only use ten percent of their brains is nonsense",
            "unrelated": "Ten percent off everything in the shop this weekend",
        },
    ),
    (
        "Microwave ovens make food radioactive",
        {
            "exact": "Throw it out: microwave ovens make food radioactive",
            "paraphrase": "Heating your dinner with those waves leaves radiation in what you eat",
            "negated": "Microwave ovens do not make food radioactive, they just heat water",
            "unrelated": "New microwave oven arrived, popcorn night is back",
        },
    ),
    (
        "Lemon water cures cancer",
        {
            "exact": "Lemon water cures cancer and big pharma hides it",
            "paraphrase": "Squeeze citrus into a glass every morning and the tumours will vanish",
            "negated": "Please stop sharing posts saying lemon water cures cancer",
            "unrelated": "Lemon water and a long walk, good start to the day",
        },
    ),
    (
        "Wind turbines cause cancer",
        {
            "exact": "Wind turbines cause cancer, the noise makes people ill",
            "paraphrase": "Living near those giant windmills gives you tumours",
            "negated": "Wind turbines cause cancer? No evidence, says the health agency",
            "unrelated": "Windy day at the coast, the turbines were spinning fast",
        },
    ),
    (
        "Fluoride in tap water lowers IQ",
        {
            "exact": "Fluoride in tap water lowers IQ, buy a filter now",
            "paraphrase": "The chemical they add to our drinking supply makes children less"
            " intelligent",
            "negated": "Fluoride in tap water at these levels does not lower IQ, the review found",
            "unrelated": "Tap water tastes better since they replaced the pipes",
        },
    ),
    (
        "Wearing masks causes oxygen deficiency",
        {
            "exact": "Wearing masks causes oxygen deficiency in children!!",
            "paraphrase": "Covering your face all day starves your blood of air",
            "negated": "Wearing masks does not cause oxygen deficiency, surgeons wear them for"
            " hours",
            "unrelated": "Face masks and cucumber slices, spa night with the girls",
        },
    ),
]
# More rated claims in the table that no caption here is about: a realistic table is mostly claims
# a given post does not touch, and each is a chance for a false match.
OTHER_CLAIMS: list[tuple[str, str]] = [
    ("Bill Gates wants to depopulate the world with vaccines", "false"),
    ("The 2020 election was stolen", "false"),
    ("Hydroxychloroquine cures covid", "false"),
    ("Ivermectin cures covid", "misleading"),
    ("Covid vaccines alter your DNA", "false"),
    ("Sharks do not get cancer", "false"),
    ("Birds are government surveillance drones", "false"),
    ("Eating carrots improves night vision", "misleading"),
    ("Cracking your knuckles causes arthritis", "false"),
    ("Sugar makes children hyperactive", "disputed"),
    ("Bulls are enraged by the color red", "false"),
    ("Goldfish have a three second memory", "false"),
    ("Lightning never strikes the same place twice", "false"),
    ("Bananas are radioactive and dangerous to eat", "misleading"),
    ("Mobile phones cause brain cancer", "disputed"),
    ("Smart meters emit harmful radiation", "misleading"),
    ("Coffee stunts your growth", "false"),
    ("Shaving makes hair grow back thicker", "false"),
    ("Antibiotics cure viral infections", "false"),
    ("The measles vaccine causes measles outbreaks", "false"),
]


def caption_cases() -> list[CaptionCase]:
    return [
        CaptionCase(kind, caption, kind in ("exact", "paraphrase"))
        for _, captions in CLAIMS
        for kind, caption in captions.items()
    ]


def claims_table() -> list[Claim]:
    """The rated claims the captions are matched against (labelled ones first)."""
    from trustcard.analysis.claims import Claim

    rated = [(text, "false") for text, _ in CLAIMS] + OTHER_CLAIMS
    return [Claim(i, text, verdict, []) for i, (text, verdict) in enumerate(rated, 1)]


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


# A caption's fact_check score from one matcher. Another matcher (e.g. by embedding) becomes one
# more column: caption_table(cases, {**fact_check_scorers(), "embedding": its_scorer}).
CaptionScorer = Callable[[str, "list[Claim]"], float]


def pipeline_fact_check(caption: str, claims: list[Claim]) -> float:
    """The fact_check score of the installed analyzer, through the real pipeline."""
    return float(_signal(caption, [], claims)["fact_check"].get("score") or 0.0)


def fact_check_scorers() -> dict[str, CaptionScorer]:
    """The built-in matcher, named by its version (what `before`/`after` runs tell apart)."""
    from trustcard.analysis.factcheck import ClaimMatcher

    return {str(ClaimMatcher.version): pipeline_fact_check}


def embedding_scorers() -> dict[str, CaptionScorer]:
    """The claim_similarity plug-in as one more column, when `trustcard[embeddings]` is installed
    (it loads the model here, once: several seconds)."""
    from trustcard.analysis.claim_embeddings import ClaimSimilarityAnalyzer

    try:
        analyzer = ClaimSimilarityAnalyzer()
    except RuntimeError:  # the extra is not installed: no such column
        return {}

    def similarity(caption: str, claims: list[Claim]) -> float:
        return float(analyzer.match(caption, claims).score or 0.0)

    return {f"claim_similarity {analyzer.version}": similarity}


def caption_table(
    cases: list[CaptionCase], scorers: Mapping[str, CaptionScorer] | None = None
) -> list[str]:
    """Precision and recall over repeats, one column per matcher; then flags per caption kind."""
    claims = claims_table()
    scorers = scorers or fact_check_scorers()
    tallies: dict[str, Tally] = {}
    flags: dict[str, dict[str, list[bool]]] = {}  # matcher -> kind -> flagged per caption
    for name, score in scorers.items():
        tally = tallies[name] = Tally()
        for case in cases:
            flagged = score(case.caption, claims) >= FLAG_SCORE
            flags.setdefault(name, {}).setdefault(case.kind, []).append(flagged)
            tally.labelled += case.repeats
            tally.called += flagged
            tally.correct += flagged and case.repeats
    names = list(scorers)
    header = "| | " + " | ".join(names) + " |"
    rule = "|---|" + "---|" * len(names)
    lines = [
        f"fact_check, flags at score >= {FLAG_SCORE}: {len(cases)} captions against "
        f"{len(claims)} rated claims:",
        header,
        rule,
    ]
    rows: list[tuple[str, Callable[[Tally], str]]] = [
        ("labelled repeats", lambda t: str(t.labelled)),
        ("flagged", lambda t: str(t.called)),
        ("correct", lambda t: str(t.correct)),
        ("precision", Tally.precision),
        ("recall", Tally.recall),
    ]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(tallies[n]) for n in names) + " |")
    lines += ["", "flagged / captions, per caption kind:", header.replace("| |", "| kind |"), rule]
    for kind in flags[names[0]]:
        cells = [f"{sum(flags[n][kind])} / {len(flags[n][kind])}" for n in names]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
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
    lines += caption_table(caption_cases(), {**fact_check_scorers(), **embedding_scorers()})
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one image per kind")
    print(report(parser.parse_args().quick))


if __name__ == "__main__":
    main()
