"""Chunked exact top-k against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from biencoder import similarity as sim
from biencoder.index.exact import chunked_top_k


def _brute(q: np.ndarray, c: np.ndarray, k: int, fn: str = "dot") -> tuple[np.ndarray, np.ndarray]:
    scores = sim.similarity(q, c, fn)
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, idx, axis=1), idx


@pytest.mark.parametrize("fn", ["dot", "cosine", "euclidean", "manhattan"])
@pytest.mark.parametrize(("chunk", "qchunk"), [(7, 3), (1000, 1000), (1, 1)])
def test_matches_brute_force(fn: str, chunk: int, qchunk: int) -> None:
    rng = np.random.default_rng(0)
    c = rng.standard_normal((103, 12)).astype(np.float32)
    q = rng.standard_normal((17, 12)).astype(np.float32)
    s, i = chunked_top_k(
        q,
        c,
        9,
        score_fn=sim.MATRIX[sim.SimilarityFunction(fn)],
        corpus_chunk_size=chunk,
        query_chunk_size=qchunk,
    )
    rs, ri = _brute(q, c, 9, fn)
    np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(i, ri)  # random floats: no ties


def test_ties_go_to_the_lower_index_whatever_the_chunking() -> None:
    c = np.ones((20, 3), dtype=np.float32)
    q = np.ones((2, 3), dtype=np.float32)
    for chunk in (1, 3, 20):
        _, i = chunked_top_k(q, c, 5, corpus_chunk_size=chunk)
        np.testing.assert_array_equal(i, [[0, 1, 2, 3, 4]] * 2)


def test_valid_mask_excludes_rows_and_caps_k() -> None:
    rng = np.random.default_rng(1)
    c = rng.standard_normal((30, 4)).astype(np.float32)
    q = rng.standard_normal((5, 4)).astype(np.float32)
    valid = np.zeros(30, dtype=bool)
    valid[[3, 7, 11]] = True
    s, i = chunked_top_k(q, c, 10, corpus_chunk_size=4, valid=valid)
    assert i.shape == (5, 3)
    assert set(i.ravel()) <= {3, 7, 11}
    rs, ri = _brute(q, c[[3, 7, 11]], 3)
    np.testing.assert_array_equal(i, np.array([3, 7, 11])[ri])
    np.testing.assert_allclose(s, rs, rtol=1e-6)


def test_memory_mapped_corpus(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    c = rng.standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", c)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    q = rng.standard_normal((4, 8)).astype(np.float32)
    _, i = chunked_top_k(q, mm, 5, corpus_chunk_size=6)
    np.testing.assert_array_equal(i, _brute(q, c, 5)[1])


def test_bad_arguments() -> None:
    c = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="dimension mismatch"):
        chunked_top_k(np.zeros((1, 5), np.float32), c, 2)
    with pytest.raises(ValueError, match="k must be"):
        chunked_top_k(np.zeros((1, 4), np.float32), c, 0)
    with pytest.raises(ValueError, match="corpus_chunk_size"):
        chunked_top_k(np.zeros((1, 4), np.float32), c, 1, corpus_chunk_size=0)
