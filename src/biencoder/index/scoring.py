"""Search kernels over row blocks: exact, quantized (asymmetric) and rescoring with float32 vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder import similarity as sim
from biencoder.index.exact import ScoreFn, chunked_top_k, merge_top_k
from biencoder.index.quantize import Quantization, int8_query_scorer

Array = NDArray[np.float32]
Positions = NDArray[np.int64]


def float_score_fn(metric: sim.SimilarityFunction) -> ScoreFn:
    """Score function on stored float32 rows (cosine rows are stored normalised: a dot product)."""
    if metric is sim.SimilarityFunction.COSINE:
        return sim.dot
    return sim.MATRIX[metric]


def quantized_queries(queries: Array, quantization: Quantization, ranges: Array | None, dim: int) -> Array:
    """Queries prepared for :func:`quantized_score_fn`: one extra column carries a per-query offset."""
    if quantization is Quantization.INT8:
        assert ranges is not None  # set with the first vectors added
        scale, offset = int8_query_scorer(ranges)
        # q · dequant(c) = (q * scale) · (c + 128) + q · offset
        return np.hstack([queries * scale, (queries @ offset)[:, None]]).astype(np.float32)
    # binary: q · (±1 / sqrt(dim)), on the scale of a cosine
    return np.hstack([queries / np.sqrt(dim), np.zeros((len(queries), 1))]).astype(np.float32)


def quantized_score_fn(quantization: Quantization, dim: int) -> ScoreFn:
    def score_int8(q: Array, codes: Any) -> Array:
        c = codes.astype(np.float32)
        c += 128.0
        return q[:, :-1] @ c.T + q[:, -1:]  # [qc, cc]

    def score_binary(q: Array, codes: Any) -> Array:
        bits = np.unpackbits(codes, axis=-1, count=dim).astype(np.float32)
        return 2.0 * (q[:, :-1] @ bits.T) - q[:, :-1].sum(axis=1, keepdims=True)  # q · (2b - 1)

    return score_int8 if quantization is Quantization.INT8 else score_binary


def top_k_over_blocks(
    queries: Array,
    blocks: Sequence[Any],
    alive: NDArray[np.bool_],
    k: int,
    score_fn: ScoreFn,
    chunk_size: int,
    query_chunk_size: int,
    check_dims: bool = True,
) -> tuple[Array, Positions]:
    """Exact top-k across row blocks (a memory-mapped base plus appended blocks); global positions."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    offset = 0
    for block in blocks:
        n = len(block)
        valid = alive[offset : offset + n]
        if valid.any():
            s, i = chunked_top_k(
                queries,
                block,
                k,
                score_fn=score_fn,
                corpus_chunk_size=chunk_size,
                query_chunk_size=query_chunk_size,
                valid=None if valid.all() else valid,
                check_dims=check_dims,
            )
            best_s, best_i = merge_top_k(best_s, best_i, s, i + offset, k)
        offset += n
    return best_s, best_i


def gather_rows(blocks: Sequence[Any], positions: NDArray[np.int64], dim: int) -> Array:
    """Rows at global ``positions`` (any shape) -> [..., dim]; reads only those rows of a memmap."""
    flat = positions.reshape(-1)
    out = np.zeros((len(flat), dim), dtype=np.float32)
    offset = 0
    for block in blocks:
        n = len(block)
        inside = (flat >= offset) & (flat < offset + n)
        if inside.any():
            local = flat[inside] - offset
            order = np.argsort(local, kind="stable")  # sequential reads of the memmap
            rows = np.asarray(block[local[order]], dtype=np.float32)
            tmp = np.empty_like(rows)
            tmp[order] = rows
            out[inside] = tmp
        offset += n
    return out.reshape(*positions.shape, dim)


def rescore(
    queries: Array,
    blocks: Sequence[Any],
    positions: Positions,
    metric: sim.SimilarityFunction,
    k: int,
    dim: int,
    query_chunk_size: int = 256,
) -> tuple[Array, Positions]:
    """Re-rank candidate positions [q, c] (-1: none) with the float32 rows; keep the best ``k``."""
    scores = np.full(positions.shape, -np.inf, dtype=np.float32)
    for qs in range(0, len(queries), query_chunk_size):
        pos = positions[qs : qs + query_chunk_size]
        rows = gather_rows(blocks, np.maximum(pos, 0), dim)  # [qc, c, dim]
        q = queries[qs : qs + query_chunk_size, None, :]
        if metric is sim.SimilarityFunction.EUCLIDEAN:
            s = -np.sqrt(((rows - q) ** 2).sum(-1))
        else:
            s = np.einsum("qcd,qd->qc", rows, q[:, 0, :])
        scores[qs : qs + query_chunk_size] = np.where(pos >= 0, s, -np.inf)
    top_s, top_i = merge_top_k(
        scores, positions, np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64), k
    )
    return top_s, top_i
