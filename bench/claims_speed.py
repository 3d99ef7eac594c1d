"""`python -m bench.claims_speed [--claims N]`: time matching one caption against N claims.

Two made-up claims tables (seeded, so every run builds the same ones), each against a 350-word
caption:

- typical: claims of 3-9 words from a 5,000-word vocabulary; the caption draws on the same
  vocabulary, so a few claims share words with it and nearly all are skipped early.
- worst: claims from a 300-word vocabulary and a caption holding every one of those words, so
  every claim passes the first cheap pre-check (its words are all in the caption).
- quoted: every claim is a slice of the caption itself (3-9 words), so every claim passes both
  pre-checks, is compared with every window and matches; not a real table, the upper bound.

"first" includes normalising the claims (stemming every word, cached per process afterwards);
"warm" is the median of the next runs, as in a worker that has matched before. Only the public
API (`Claim`, `match_claims`) is used, so the same file measures an older matcher too:
`PYTHONPATH=<old checkout>/service python -m bench.claims_speed`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from trustcard.analysis import claims as claims_module
from trustcard.analysis.claims import Claim, match_claims

CAPTION_WORDS = 350
WARM_RUNS = 3
SCENARIOS = ("typical", "worst", "quoted")
_CONSONANTS = "bdfgkmnprtvz"
_VOWELS = "aou"


def _vocabulary(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.randint(2, 4)
        words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables)))
    return sorted(words)


def scenario(name: str, claim_count: int) -> tuple[list[Claim], str]:
    """The claims table and the caption of one scenario ("typical", "worst" or "quoted")."""
    rng = random.Random(f"{name}-{claim_count}")
    vocabulary = _vocabulary(5_000 if name == "typical" else 300, rng)
    claims = [
        Claim(i, " ".join(rng.choices(vocabulary, k=rng.randint(3, 9))), "false")
        for i in range(1, claim_count + 1)
    ]
    if name in ("worst", "quoted"):
        words = vocabulary + rng.choices(vocabulary, k=CAPTION_WORDS - len(vocabulary))
        rng.shuffle(words)
    else:
        words = rng.choices(vocabulary, k=CAPTION_WORDS)
    if name == "quoted":
        slices = []
        for i in range(1, claim_count + 1):
            length = rng.randint(3, 9)
            start = rng.randrange(CAPTION_WORDS - length)
            slices.append(Claim(i, " ".join(words[start : start + length]), "false"))
        claims = slices
    return claims, " ".join(words)


def _clear_caches() -> None:
    for value in vars(claims_module).values():
        clear: Callable[[], None] | None = getattr(value, "cache_clear", None)
        if clear is not None:
            clear()


def measure(name: str, claim_count: int) -> tuple[float, float, int]:
    """(first-run seconds, warm median seconds, matches) for one scenario."""
    claims, caption = scenario(name, claim_count)
    _clear_caches()
    started = time.perf_counter()
    matches = match_claims(caption, claims)
    first = time.perf_counter() - started
    warm = []
    for _ in range(WARM_RUNS):
        started = time.perf_counter()
        match_claims(caption, claims)
        warm.append(time.perf_counter() - started)
    return first, statistics.median(warm), len(matches)


def report(claim_count: int) -> list[str]:
    lines = [
        f"claim matching, {claim_count} claims against a {CAPTION_WORDS}-word caption "
        f"(module: {claims_module.__file__}):",
        "| case | first run (s) | warm (s) | matches |",
        "|---|---|---|---|",
    ]
    for name in SCENARIOS:
        first, warm, found = measure(name, claim_count)
        lines.append(f"| {name} | {first:.3f} | {warm:.3f} | {found} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=20_000, help="claims in the table")
    print("\n".join(report(parser.parse_args().claims)))


if __name__ == "__main__":
    main()
