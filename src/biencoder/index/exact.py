"""Exact top-k search by chunked matrix products: memory bounded by the chunk sizes, not the corpus.

Pure numpy, so the ONNX runtime and the PyTorch runtime share it (no torch import here).
The corpus may be a memory-mapped array: only one chunk of it is read into memory at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from biencoder import similarity as sim

logger = logging.getLogger(__name__)

Array = NDArray[np.float32]
ScoreFn = Callable[[Array, Array], Array]


def score_function(name: str | sim.SimilarityFunction) -> ScoreFn:
    """The [n, m] score function for a similarity name (cosine, dot, euclidean, manhattan)."""
    return sim.MATRIX[sim.SimilarityFunction.parse(name)]


def check_chunk_size(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def merge_top_k(
    scores_a: Array, idx_a: NDArray[np.int64], scores_b: Array, idx_b: NDArray[np.int64], k: int
) -> tuple[Array, NDArray[np.int64]]:
    """Merge two per-row candidate lists into the k best of each row, best first.

    Ties are broken by the smaller index, so the result does not depend on chunk boundaries.
    """
    scores = np.concatenate([scores_a, scores_b], axis=1)  # [q, ka + kb]
    idx = np.concatenate([idx_a, idx_b], axis=1)
    return _top_sorted(scores, idx, k)


def _top_sorted(scores: Array, idx: NDArray[np.int64], k: int) -> tuple[Array, NDArray[np.int64]]:
    k = min(k, scores.shape[1])
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [q, k], unordered
        scores = np.take_along_axis(scores, part, axis=1)
        idx = np.take_along_axis(idx, part, axis=1)
    order = np.lexsort((idx, -scores), axis=1)  # by score descending, then index ascending
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(idx, order, axis=1)


def chunked_top_k(
    queries: Array,
    corpus: Array,
    k: int,
    *,
    score_fn: ScoreFn = sim.dot,
    corpus_chunk_size: int = 50_000,
    query_chunk_size: int = 1024,
    valid: NDArray[np.bool_] | None = None,
    check_dims: bool = True,
) -> tuple[Array, NDArray[np.int64]]:
    """The ``k`` best corpus rows for every query: (scores [q, k'], indices [q, k']), best first.

    ``k' = min(k, number of valid corpus rows)``. ``valid`` (a boolean mask over the corpus)
    excludes rows, e.g. removed entries; ``check_dims=False`` lets a custom ``score_fn`` take
    queries and corpus rows of different widths (quantized codes). Peak extra memory is about
    ``16 * query_chunk_size * corpus_chunk_size`` bytes (the float32 scores of one chunk and
    numpy's int64 partition of them), whatever the corpus size; a memory-mapped corpus is read
    one chunk at a time.
    """
    check_chunk_size(k, "k")
    check_chunk_size(corpus_chunk_size, "corpus_chunk_size")
    check_chunk_size(query_chunk_size, "query_chunk_size")
    if queries.ndim != 2 or corpus.ndim != 2:
        raise ValueError(f"queries and corpus must be 2-D, got shapes {queries.shape} and {corpus.shape}")
    if check_dims and queries.shape[1] != corpus.shape[1]:
        raise ValueError(
            f"dimension mismatch: queries have dimension {queries.shape[1]}, corpus {corpus.shape[1]}"
        )
    n = corpus.shape[0]
    if valid is not None and valid.shape != (n,):
        raise ValueError(f"valid mask must have shape ({n},), got {valid.shape}")
    n_valid = n if valid is None else int(valid.sum())
    k = min(k, n_valid)
    q = queries.shape[0]
    out_scores = np.empty((q, k), dtype=np.float32)
    out_idx = np.empty((q, k), dtype=np.int64)
    if k == 0 or q == 0:
        return out_scores, out_idx
    for qs in range(0, q, query_chunk_size):
        qe = min(qs + query_chunk_size, q)
        qchunk = np.ascontiguousarray(queries[qs:qe], dtype=np.float32)
        best_s = np.full((qe - qs, 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((qe - qs, 0), dtype=np.int64)
        for cs in range(0, n, corpus_chunk_size):
            ce = min(cs + corpus_chunk_size, n)
            cchunk = np.asarray(corpus[cs:ce])  # reads one chunk of a memmap; score_fn casts
            scores = np.asarray(score_fn(qchunk, cchunk), dtype=np.float32)  # [qc, cc]
            if valid is not None:
                scores[:, ~valid[cs:ce]] = -np.inf
            kk = min(k, ce - cs)
            # the kk largest sit at the end after partitioning (no negated copy of the scores)
            part = np.argpartition(scores, ce - cs - kk, axis=1)[:, ce - cs - kk :] if ce - cs > kk else None
            if part is not None:
                _lowest_index_ties(scores, part)
            if part is None:
                cand_i = np.broadcast_to(np.arange(cs, ce, dtype=np.int64), scores.shape)
                cand_s = scores
            else:
                cand_s = np.take_along_axis(scores, part, axis=1)
                cand_i = part.astype(np.int64) + cs
            best_s, best_i = merge_top_k(best_s, best_i, cand_s, np.asarray(cand_i), k)
            del scores
        out_scores[qs:qe] = best_s[:, :k]
        out_idx[qs:qe] = best_i[:, :k]
    return out_scores, out_idx


def _lowest_index_ties(scores: Array, part: NDArray[np.intp]) -> None:
    """Make ``part`` (the columns argpartition chose, per row) prefer lower columns among ties.

    argpartition picks arbitrarily among values tied at the cut; rows where more columns hold
    the cut value than were chosen are redone by hand, so results do not depend on chunking.
    """
    chosen = np.take_along_axis(scores, part, axis=1)  # [q, kk]
    cut = chosen.min(axis=1, keepdims=True)  # [q, 1]
    overflow = np.flatnonzero((scores == cut).sum(axis=1) > (chosen == cut).sum(axis=1))
    kk = part.shape[1]
    for r in overflow:
        above = np.flatnonzero(scores[r] > cut[r, 0])
        tied = np.flatnonzero(scores[r] == cut[r, 0])[: kk - len(above)]
        part[r] = np.concatenate([above, tied])
