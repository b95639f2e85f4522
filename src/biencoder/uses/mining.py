"""Paraphrase mining: the most similar pairs among a list of texts, as sentence-transformers mines them.

Every text is compared with every other in chunks; each text keeps its ``top_k`` nearest
neighbours, and of all those pairs the ``max_pairs`` best are returned, best first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder import similarity as sim
from biencoder.index.exact import check_chunk_size, chunked_top_k, score_function
from biencoder.progress import track
from biencoder.protocol import Encoder
from biencoder.uses._inputs import embed

logger = logging.getLogger(__name__)


def paraphrase_mining(
    encoder_or_embeddings: Encoder | Any,
    texts: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    query_chunk_size: int = 5000,
    corpus_chunk_size: int = 100000,
    max_pairs: int = 500000,
    top_k: int = 100,
    show_progress: bool | None = None,
    similarity: str = "cosine",
) -> list[tuple[float, int, int]]:
    """The most similar pairs ``(score, i, j)`` with ``i < j``, sorted by score descending.

    ``encoder_or_embeddings`` is an :class:`~biencoder.protocol.Encoder` (then ``texts`` are
    encoded) or precomputed embeddings [n, dim] (then ``texts`` is optional). Semantics of
    ``sentence_transformers.util.paraphrase_mining``: each text's ``top_k`` neighbours (itself
    excluded) are candidates; a pair found from both ends counts once; the ``max_pairs`` best
    are kept. ``similarity`` is assumed symmetric (cosine by default, as the reference).
    Ties are ordered by (i, j).
    """
    for value, name in (
        (query_chunk_size, "query_chunk_size"),
        (corpus_chunk_size, "corpus_chunk_size"),
        (max_pairs, "max_pairs"),
        (top_k, "top_k"),
    ):
        check_chunk_size(value, name)
    fn = sim.SimilarityFunction.parse(similarity)
    emb = embed(encoder_or_embeddings, texts, batch_size=batch_size, show_progress=show_progress)
    if fn is sim.SimilarityFunction.COSINE:  # normalise once, then plain dot products per chunk
        emb, fn = sim.normalize(emb), sim.SimilarityFunction.DOT
    n = emb.shape[0]
    if n < 2:
        return []
    score_fn = score_function(fn)
    best_s = np.empty(0, dtype=np.float32)
    best_key = np.empty(0, dtype=np.int64)
    starts = range(0, n, query_chunk_size)
    show = None if show_progress is None else bool(show_progress) and len(starts) > 1
    for qs in track(starts, "Mining", "chunk", show=show):
        qe = min(qs + query_chunk_size, n)
        scores, idx = chunked_top_k(
            emb[qs:qe],
            emb,
            top_k + 1,
            score_fn=score_fn,
            corpus_chunk_size=corpus_chunk_size,
            query_chunk_size=qe - qs,
        )  # [qc, top_k + 1]
        cand_s, cand_key = _pairs_without_self(scores, idx, qs, top_k, n)
        best_s, best_key = _keep_best(
            np.concatenate([best_s, cand_s]), np.concatenate([best_key, cand_key]), max_pairs
        )
    order = np.lexsort((best_key, -best_s))
    i, j = np.divmod(best_key[order], n)
    logger.debug("mined %d pairs from %d texts", len(order), n)
    return [(float(s), int(a), int(b)) for s, a, b in zip(best_s[order], i, j, strict=True)]


def _pairs_without_self(
    scores: NDArray[np.float32], idx: NDArray[np.int64], start: int, top_k: int, n: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Per query row: drop the query itself, keep the first ``top_k``; pair keys ``min * n + max``."""
    rows = np.arange(start, start + scores.shape[0], dtype=np.int64)[:, None]  # [qc, 1]
    not_self = idx != rows
    # rank among the non-self neighbours; keep ranks < top_k (self may be absent from a row)
    rank = np.cumsum(not_self, axis=1) - 1
    keep = not_self & (rank < top_k)
    i = np.broadcast_to(rows, idx.shape)[keep]
    j = idx[keep]
    key = np.minimum(i, j) * n + np.maximum(i, j)
    return scores[keep], key


def _keep_best(
    scores: NDArray[np.float32], keys: NDArray[np.int64], max_pairs: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Deduplicate pair keys (keeping the higher score) and keep the ``max_pairs`` best."""
    order = np.lexsort((-scores, keys))  # by key, best score first within a key
    keys, scores = keys[order], scores[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys, scores = keys[first], scores[first]
    if len(keys) > max_pairs:
        top = np.lexsort((keys, -scores))[:max_pairs]
        keys, scores = keys[top], scores[top]
    return scores, keys
