"""semantic_search and community_detection against sentence-transformers; k-means against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biencoder.uses import community_detection, kmeans, semantic_search
from tests.numerics import assert_same_ranking, dot_atol

st_util = pytest.importorskip("sentence_transformers.util")
torch = pytest.importorskip("torch")


@pytest.mark.parametrize(("qchunk", "cchunk", "top_k"), [(100, 500_000, 10), (3, 7, 5), (1, 1, 200)])
def test_semantic_search_matches_sentence_transformers(qchunk: int, cchunk: int, top_k: int) -> None:
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((120, 16)).astype(np.float32)
    queries = rng.standard_normal((9, 16)).astype(np.float32)
    ours = semantic_search(queries, corpus, top_k=top_k, query_chunk_size=qchunk, corpus_chunk_size=cchunk)
    ref = st_util.semantic_search(
        torch.from_numpy(queries),
        torch.from_numpy(corpus),
        top_k=top_k,
        query_chunk_size=qchunk,
        corpus_chunk_size=cchunk,
    )
    # cosine scores from numpy and from torch: float32 dot products of 16 terms of unit vectors
    atol = dot_atol(16)
    for o, r in zip(ours, ref, strict=True):
        assert_same_ranking(
            [h["corpus_id"] for h in o], [h["score"] for h in o],
            [h["corpus_id"] for h in r], [h["score"] for h in r], atol,
        )  # fmt: skip


def test_semantic_search_dot_and_texts(tiny_model_dir: Path) -> None:
    from biencoder import SentenceEncoder

    enc = SentenceEncoder.load(tiny_model_dir, device="cpu")
    docs = ["the cat is big", "a small dog", "red fish in water", "the tree is green", "fast car"]
    ours = semantic_search(["big cat", "water"], docs, encoder=enc, top_k=3, similarity="dot")
    ref = st_util.semantic_search(
        torch.from_numpy(enc.encode(["big cat", "water"])),
        torch.from_numpy(enc.encode(docs)),
        top_k=3,
        score_function=st_util.dot_score,
    )
    full = (
        enc.encode(["big cat", "water"]) @ enc.encode(docs).T
    )  # the tiny model maps some docs to one vector
    for q, (o, r) in enumerate(zip(ours, ref, strict=True)):
        np.testing.assert_allclose([h["score"] for h in o], [h["score"] for h in r], rtol=1e-5)
        for a, b in zip(o, r, strict=True):
            tied = int(np.sum(np.abs(full[q] - b["score"]) < 1e-6)) > 1
            assert tied or a["corpus_id"] == b["corpus_id"]
        ranked = sorted(range(len(docs)), key=lambda i: (-round(float(full[q, i]), 5), i))[:3]
        assert [h["corpus_id"] for h in o] == ranked  # ties: lower row first
    with pytest.raises(ValueError, match="pass encoder="):
        semantic_search(["q"], docs)
    with pytest.raises(ValueError, match="dimension mismatch"):
        semantic_search(np.ones((1, 3)), np.ones((4, 5)))
    assert semantic_search(np.ones((2, 3)), np.zeros((0, 3))) == [[], []]


def _blobs(seed: int, n_centres: int = 6, per: int = 30, dim: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim)) * 3
    labels = np.repeat(np.arange(n_centres), per)
    x = centres[labels] + rng.standard_normal((len(labels), dim))
    perm = rng.permutation(len(labels))
    return x[perm].astype(np.float32), labels[perm]


@pytest.mark.parametrize(("threshold", "min_size", "batch"), [(0.75, 10, 1024), (0.6, 5, 7), (0.9, 2, 50)])
def test_community_detection_matches_sentence_transformers(
    threshold: float, min_size: int, batch: int
) -> None:
    x, _ = _blobs(1)
    ours = community_detection(x, threshold=threshold, min_community_size=min_size, batch_size=batch)
    ref = st_util.community_detection(
        torch.from_numpy(x), threshold=threshold, min_community_size=min_size, batch_size=batch
    )
    assert len(ours) == len(ref) > 0
    # same communities with the same centres (random data: no ties in size or similarity)
    assert sorted((c[0], frozenset(c)) for c in ours) == sorted((c[0], frozenset(c)) for c in ref)
    assert [len(c) for c in ours] == sorted((len(c) for c in ours), reverse=True)


def test_community_detection_small_and_bad() -> None:
    assert community_detection(np.ones((3, 4), np.float32), min_community_size=10) == []
    with pytest.raises(ValueError, match="threshold"):
        community_detection(np.ones((3, 4), np.float32), threshold=1.5)


def test_kmeans_recovers_blobs_and_equals_sklearn() -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    x, labels = _blobs(2)
    result = kmeans(x, n_clusters=6, seed=3)
    assert adjusted_rand_score(labels, result.labels) == 1.0
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = KMeans(n_clusters=6, n_init=10, random_state=3).fit(xn)
    np.testing.assert_array_equal(result.labels, ref.labels_)
    assert result.centers.shape == (6, 24)
    with pytest.raises(ValueError, match="at least n_clusters"):
        kmeans(x[:3], n_clusters=6)
