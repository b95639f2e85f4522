"""Index: add / search / remove / upsert against brute force; quantized and HNSW recall."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from biencoder import similarity as sim
from biencoder.index import Index, IndexConfig


def _data(n: int = 400, dim: int = 24, q: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)).astype(np.float32), rng.standard_normal((q, dim)).astype(np.float32)


def _brute_ids(x: np.ndarray, q: np.ndarray, k: int, metric: str, ids: list[str]) -> list[list[str]]:
    scores = sim.similarity(q, x, metric)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order]


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean", "manhattan"])
def test_exact_search_equals_brute_force_across_blocks(metric: str) -> None:
    x, q = _data()
    ids = [f"doc-{i}" for i in range(len(x))]
    index = Index(config=IndexConfig(metric=metric, chunk_size=37, query_chunk_size=6))
    for s in range(0, len(x), 150):  # three adds: three blocks
        index.add(ids[s : s + 150], x[s : s + 150])
    result = index.search(q, 10)
    assert result.ids == _brute_ids(x, q, 10, metric, ids)
    expected = np.sort(sim.similarity(q, x, metric), axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(np.array(result.scores), expected, rtol=1e-5, atol=1e-5)


def test_remove_and_upsert() -> None:
    x, q = _data(100, 8, 5)
    ids = [str(i) for i in range(100)]
    index = Index()
    index.add(ids, x)
    top = index.search(q[:1], 3).ids[0]
    index.remove(top[0])
    assert len(index) == 99 and top[0] not in index
    assert top[0] not in index.search(q[:1], 50).ids[0]
    # upsert: id "5" now holds the query itself, so it comes first
    index.add("5", q[:1])
    assert len(index) == 99
    assert index.search(q[:1], 1).ids[0] == ["5"]
    np.testing.assert_allclose(index.get("5"), sim.normalize(q[:1])[0], rtol=1e-6)
    with pytest.raises(KeyError, match="not in the index"):
        index.remove(["5", "nope"])
    assert index.search(q, 200).ids[0].__len__() == 99  # k capped by live rows


def test_texts_with_an_encoder_match_encoding_by_hand(tiny_model_dir: Path) -> None:
    from biencoder import SentenceEncoder

    enc = SentenceEncoder.load(tiny_model_dir, device="cpu")
    docs = [
        f"the {a} {b} is {c}"
        for a in ("cat", "dog", "fish")
        for b in ("big", "small")
        for c in ("red", "blue")
    ]
    index = Index(encoder=enc)
    index.add([f"d{i}" for i in range(len(docs))], docs)
    queries = ["a big red cat", "blue fish"]
    expected = _brute_ids(
        enc.encode(docs), enc.encode(queries), 4, "cosine", [f"d{i}" for i in range(len(docs))]
    )
    assert index.search(queries, 4).ids == expected
    assert index.search("blue fish", 4).ids == expected[1:]


def _clustered(n: int, dim: int, q: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 50 centres, queries near corpus rows: neighbours are well separated."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, dim))
    qs = x[rng.integers(0, n, q)] + 0.3 * rng.standard_normal((q, dim))
    return sim.normalize(x.astype(np.float32)), sim.normalize(qs.astype(np.float32))


@pytest.mark.parametrize(
    ("kind", "quantization", "min_recall"),
    [("exact", "int8", 0.99), ("exact", "binary", 0.9), ("hnsw", "none", 0.97), ("hnsw", "int8", 0.97)],
)
def test_recall_against_exact(kind: str, quantization: str, min_recall: float) -> None:
    x, q = _clustered(3000, 48, 100, seed=1)
    ids = [str(i) for i in range(len(x))]
    truth = _brute_ids(x, q, 10, "cosine", ids)
    index = Index(config=IndexConfig(kind=kind, quantization=quantization, rescore_multiplier=4))
    index.add(ids, x)
    assert _recall(index.search(q, 10).ids, truth) >= min_recall
    if quantization != "none":  # rescoring gives exact scores of the rows it returns
        res = index.search(q, 10)
        for row_ids, row_scores, qv in zip(res.ids, res.scores, q, strict=True):
            exact = x[[int(i) for i in row_ids]] @ qv
            np.testing.assert_allclose(row_scores, exact, rtol=1e-5, atol=1e-5)


def test_int8_rescoring_improves_on_quantized_scores() -> None:
    x, q = _clustered(3000, 48, 100, seed=2)
    ids = [str(i) for i in range(len(x))]
    truth = _brute_ids(x, q, 10, "cosine", ids)
    index = Index(config=IndexConfig(quantization="binary", rescore_multiplier=8))
    index.add(ids, x)
    assert _recall(index.search(q, 10).ids, truth) > _recall(index.search(q, 10, rescore=False).ids, truth)
    assert index.memory_bytes()["codes"] * 32 == index.memory_bytes()["float32"]


def test_hnsw_remove_and_upsert() -> None:
    x, q = _clustered(500, 16, 10, seed=3)
    ids = [str(i) for i in range(len(x))]
    index = Index(config=IndexConfig(kind="hnsw"))
    index.add(ids, x)
    first = index.search(q, 1).ids
    index.remove([r[0] for r in first])
    for r, again in zip(first, index.search(q, 10).ids, strict=True):
        assert r[0] not in again and len(again) == 10
    index.add("new", q[:1])
    assert index.search(q[:1], 1).ids == [["new"]]


def test_bad_input() -> None:
    index = Index()
    with pytest.raises(ValueError, match="empty"):
        index.search(np.ones((1, 4), np.float32))
    index.add(["a", "b"], np.eye(2, 4, dtype=np.float32))
    with pytest.raises(ValueError, match="dimension mismatch"):
        index.add(["c"], np.ones((1, 5), np.float32))
    with pytest.raises(ValueError, match="dimension mismatch"):
        index.search(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="no encoder"):
        index.search("a text")
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        index.add(["c", "d"], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="duplicate id"):
        index.add(["c", "c"], np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.add(["c"], np.full((1, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.ones((1, 4), np.float32), k=0)
    with pytest.raises(ValueError, match="supports the metrics cosine, dot, euclidean"):
        IndexConfig(kind="hnsw", metric="manhattan")
    with pytest.raises(ValueError, match="unknown quantization"):
        IndexConfig(quantization="int4")
    with pytest.raises(ValueError, match="chunk_size"):
        IndexConfig(chunk_size=0)


def test_index_and_uses_do_not_import_torch() -> None:
    code = (
        "import sys, biencoder.index, biencoder.uses, biencoder.uses.clustering, biencoder.uses.classify; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
