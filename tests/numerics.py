"""Tolerances for comparisons whose two sides are computed differently, each derived from the numerics.

A comparison between two runtimes (torch and ONNX), two kernels, two thread counts or two batch
compositions differs by rounding alone, and rounding depends on the machine: which SIMD kernel
the BLAS picks, how it splits a reduction across threads, how a batch is padded. A bound that
merely passed once on one machine is not a bound. These are the ones the tests use, and why.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FP32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7: one unit in the last place at 1.0

# The product contract: our embeddings equal sentence-transformers' to 1e-5 (absolute, per
# component, unit vectors). Every path that computes an embedding is held to it, so the same
# bound serves two of our own paths that differ only in how the work is batched or threaded.
EMBEDDING_ATOL = 1e-5

# Two runtimes (torch and ONNX Runtime fp32) are each within the contract of the reference, so
# within twice the contract of each other (triangle inequality).
CROSS_RUNTIME_ATOL = 2 * EMBEDDING_ATOL


def dot_atol(length: int, scale: float = 1.0) -> float:
    """Worst-case float32 error of a dot product of ``length`` terms whose |x|*|y| is ``scale``.

    The classic bound is gamma_n = n * u (u = eps / 2) relative to sum |x_i y_i| <= |x| |y|; two
    implementations may round in opposite directions, so their difference is at most n * eps *
    scale. For unit vectors of dimension 384 that is 4.6e-5; in practice pairwise and blocked
    summation stay far below it, but a bound has to hold on every machine.
    """
    return length * FP32_EPS * scale


def cosine_atol(embedding_atol: float, dim: int) -> float:
    """How far a cosine moves when each component of either unit vector moves by ``embedding_atol``.

    |a'.b' - a.b| <= |a' - a| |b'| + |a| |b' - b| <= 2 * sqrt(dim) * embedding_atol (norms are 1).
    """
    return 2.0 * float(np.sqrt(dim)) * embedding_atol


def pearson_atol(score_atol: float, scores: Sequence[float] | np.ndarray) -> float:
    """How far a Pearson correlation moves when each predicted score moves by at most ``score_atol``.

    r = <g_c, s_c> / (|g_c| |s_c|) with centred vectors. A perturbation e (|e_i| <= score_atol)
    moves the unit vector s_c / |s_c| by at most 2 |e_c| / |s_c| <= 2 sqrt(n) score_atol /
    (sqrt(n) std(s)), so |r' - r| <= 2 * score_atol / std(s).
    """
    spread = float(np.std(np.asarray(scores, dtype=np.float64)))
    if spread == 0.0:
        raise ValueError("the scores have no spread: Pearson is undefined")
    return 2.0 * score_atol / spread


def assert_same_ranking(
    got_ids: Sequence[object],
    got_scores: Sequence[float],
    want_ids: Sequence[object],
    want_scores: Sequence[float],
    atol: float,
) -> None:
    """Equal scores to ``atol``, and equal ids except where two hits' scores lie within ``atol``.

    Two implementations may order a near-tie differently: a swap is allowed only between hits
    whose reference scores are closer than the tolerance of the comparison itself.
    """
    np.testing.assert_allclose(np.asarray(got_scores), np.asarray(want_scores), rtol=0, atol=atol)
    assert len(got_ids) == len(want_ids), (got_ids, want_ids)
    scores = np.asarray(want_scores, dtype=np.float64)
    for rank, (g, w) in enumerate(zip(got_ids, want_ids, strict=True)):
        if g == w:
            continue
        tied = [want_ids[r] for r in range(len(want_ids)) if abs(scores[r] - scores[rank]) <= 2 * atol]
        assert g in tied or rank == len(want_ids) - 1, (
            f"rank {rank}: got {g!r}, want {want_ids[rank]!r} (score {scores[rank]:.7f}); "
            f"only a near-tie within {2 * atol:.1e} may swap"
        )
