"""The label-free fusion decision: the rule on reciprocal ranks, and the decision on an index whose
one side is blind (dense vectors that know nothing; words that never recur), where it must pick
the other side."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from biencoder.index import FusionRecord, Index
from biencoder.index.fusion_choice import DENSE, Z, choose_index_fusion, decide, decision_candidates
from biencoder.index.hybrid import SearchSettings
from biencoder.index.lexical import LexicalConfig
from biencoder.index.persist import read_fusion_record

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

DIM = 16
TOPICS = ["apple", "river", "engine", "violin", "glacier", "protein", "harbor", "comet"]


class LookupEncoder:
    """Embeds a text as the vector of the document it was cut from (``owner``: a word -> its
    document; the text's first word decides): the dense side finds every probe's target."""

    dimension = DIM
    similarity_fn_name = "cosine"

    def __init__(self, owner: dict[str, int], vectors: NDArray[np.float32]) -> None:
        self.owner, self.vectors = owner, vectors

    def encode(self, texts: Any, **_: Any) -> NDArray[np.float32]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = [self.owner[t.split()[0]] for t in texts]
        return self.vectors[rows]


class RandomEncoder:
    """A vector drawn from the text's hash: the dense side knows nothing."""

    dimension = DIM
    similarity_fn_name = "cosine"

    def encode(self, texts: Any, **_: Any) -> NDArray[np.float32]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM) for t in texts]
        return np.asarray(out, dtype=np.float32)


def _sentences(text: str) -> list[str]:
    return [s.strip() + "." for s in text.split(".") if s.strip()]


def _unique_words_corpus(n: int) -> list[str]:
    """Documents of three sentences whose words never recur anywhere: BM25 cannot match a probe."""
    docs = []
    for d in range(n):
        sentences = [" ".join(f"W{d}x{s}x{w}" for w in range(6)) + "." for s in range(3)]
        docs.append(" ".join(sentences))
    return docs


def _topic_corpus(n: int) -> list[str]:
    """Documents of three sentences sharing a rare name and a topic word: BM25 finds the target."""
    rng = np.random.default_rng(0)
    docs = []
    for d in range(n):
        name = f"zq{d}"
        topic = TOPICS[d % len(TOPICS)]
        sentences = [
            f"{name} {topic} {' '.join(rng.choice(TOPICS, 3))} item {s} of the list." for s in range(3)
        ]
        docs.append(" ".join(sentences))
    return docs


def _index(texts: list[str], encoder: Any) -> Index:
    index = Index(encoder=encoder, lexical=LexicalConfig())
    index.add([f"d{i}" for i in range(len(texts))], encoder.encode(texts), texts=texts)
    return index


def test_decide_keeps_dense_without_a_clear_gain() -> None:
    candidates = decision_candidates()
    dense = np.linspace(0, 1, 50)
    same = np.repeat(dense[:, None], len(candidates), axis=1)
    record = decide(dense, same, candidates)
    assert (record.alpha, record.adaptive, record.source) == (1.0, False, "chosen")
    assert record.evidence is not None and record.evidence["choice"] == DENSE
    noisy = same.copy()
    noisy[0, 2] += 0.5  # one probe better, 49 the same: a mean gain of 0.01, not beyond doubt
    noisy[1, 2] -= 0.3
    assert decide(dense, noisy, candidates).evidence["choice"] == DENSE  # type: ignore[index]
    with pytest.raises(ValueError, match="probes, candidates"):
        decide(dense, same[:, :2], candidates)


def test_decide_takes_the_best_lower_bound_on_the_gain() -> None:
    candidates = decision_candidates()
    rng = np.random.default_rng(0)
    dense = rng.uniform(0, 0.5, 200)
    rr = np.repeat(dense[:, None], len(candidates), axis=1)
    rr[:, 1] += rng.uniform(0.0, 0.4, 200)  # a large gain, spread
    rr[:, 3] += 0.1  # a smaller gain on every probe: the tighter lower bound
    record = decide(dense, rr, candidates)
    gains = rr - dense[:, None]
    bounds = gains.mean(0) - Z * gains.std(0, ddof=1) / np.sqrt(200)
    best = candidates[int(np.argmax(bounds))]
    assert best is candidates[1]
    assert (record.alpha, record.adaptive, record.normalization) == (best.alpha, True, "calibrated")
    assert record.evidence is not None and record.evidence["lower_bound"] == round(float(bounds.max()), 4)
    assert record.evidence["mrr"][best.label] == round(float(rr[:, 1].mean()), 4)
    assert f"{best.label} beats dense" in record.evidence["reason"]


def test_minmax_candidates_are_fixed_weights() -> None:
    cands = decision_candidates("minmax")
    assert [c.alpha for c in cands] == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert all(c.normalization == "minmax" and not c.adaptive for c in cands)


def test_a_blind_dense_side_gets_hybrid(tmp_path: Path) -> None:
    texts = _topic_corpus(120)
    index = _index(texts, RandomEncoder())
    record = index.choose_fusion(probes=60)
    assert record.source == "chosen" and record.alpha < 1.0 and record.adaptive
    assert record.evidence is not None and record.evidence["probes"] == 60
    assert record.evidence["mrr"][record.evidence["choice"]] > record.evidence["dense_mrr"] + 0.2
    assert _same_choice(choose_index_fusion(index, probes=60), record)  # seeded: the same decision
    index.save(tmp_path / "idx")
    assert read_fusion_record(tmp_path / "idx") == record
    loaded = Index.load(tmp_path / "idx", encoder=RandomEncoder())
    query = ["zq7 engine item"]
    default = loaded.search(query, 5)
    explicit = loaded.search(query, 5, alpha=record.alpha, normalization="calibrated", adaptive=True)
    assert default.ids == explicit.ids and default.scores == explicit.scores


def _same_choice(a: FusionRecord, b: FusionRecord) -> bool:
    """Equal but for the time the decision took."""
    strip = [{**(r.evidence or {}), "seconds": 0} for r in (a, b)]
    return (a.alpha, a.adaptive, a.normalization) == (b.alpha, b.adaptive, b.normalization) and strip[
        0
    ] == strip[1]


def test_a_blind_lexical_side_keeps_the_dense_order() -> None:
    texts = _unique_words_corpus(80)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((len(texts), DIM)).astype(np.float32)
    owner = {w: d for d, t in enumerate(texts) for w in t.split()}
    encoder = LookupEncoder(owner, vectors)
    index = _index(texts, encoder)
    record = index.choose_fusion(probes=40)
    assert record.evidence is not None and record.evidence["dense_mrr"] == 1.0
    assert (record.alpha, record.evidence["choice"]) == (1.0, DENSE)
    queries = [_sentences(t)[1] for t in texts[:5]]
    hybrid, dense = index.search(queries, 5), index.search(queries, 5, mode="dense")
    assert hybrid.mode == "hybrid" and hybrid.ids == dense.ids
    np.testing.assert_allclose(hybrid.scores, dense.scores, rtol=0, atol=1e-6)  # cosines, float32 vs 64


def test_the_decision_needs_a_lexical_part_an_encoder_and_rows() -> None:
    with pytest.raises(ValueError, match="no lexical part"):
        choose_index_fusion(Index(DIM))
    with pytest.raises(ValueError, match="encoder"):
        choose_index_fusion(Index(DIM, lexical=LexicalConfig()))
    with pytest.raises(ValueError, match="empty"):
        choose_index_fusion(Index(encoder=RandomEncoder(), lexical=LexicalConfig()))
    textless = Index(encoder=RandomEncoder(), lexical=LexicalConfig())
    textless.add(["a", "b"], ["one two three four five six seven eight", "nine ten"])  # texts not kept
    with pytest.raises(ValueError, match="keeps none"):
        textless.choose_fusion()


def test_a_corpus_too_short_to_probe_keeps_the_dense_order() -> None:
    index = _index(["a b", "c d e", "f"], RandomEncoder())
    record = index.choose_fusion()
    assert record.alpha == 1.0 and record.evidence is not None and record.evidence["probes"] == 0


def test_records_written_before_the_decision_still_load(tmp_path: Path) -> None:
    old = {"alpha": 0.4, "fusion": "convex", "normalization": "minmax", "grid": [0.4], "split": "dev"}
    record = FusionRecord.from_dict(old)
    assert (record.source, record.adaptive, record.evidence) == ("tuned", False, None)
    with pytest.raises(ValueError, match="unknown fusion source"):
        FusionRecord(alpha=0.5, source="guessed")
    with pytest.raises(ValueError, match="adaptive"):
        FusionRecord(alpha=0.5, adaptive="yes")  # type: ignore[arg-type]
    assert json.loads(json.dumps(FusionRecord(alpha=0.5, evidence={"probes": 3}).to_dict()))["evidence"]


def test_search_takes_the_records_adaptive_unless_a_weight_is_given() -> None:
    record = FusionRecord(alpha=0.6, normalization="calibrated", adaptive=True, source="chosen")
    common: dict[str, Any] = {"k": 5, "mode": None, "fusion": None, "candidates": 10, "has_lexical": True}
    chosen = SearchSettings.resolve(**common, alpha=None, normalization=None, record=record)
    assert (chosen.alpha, chosen.adaptive) == (0.6, True)
    given = SearchSettings.resolve(**common, alpha=0.3, normalization=None, record=record)
    assert (given.alpha, given.adaptive) == (0.3, False)
    tuned = FusionRecord(alpha=0.6)
    assert not SearchSettings.resolve(**common, alpha=None, normalization=None, record=tuned).adaptive
    untuned = SearchSettings.resolve(**common, alpha=None, normalization=None, record=None)
    assert untuned.adaptive and untuned.alpha == 0.7
