"""Semantic search: the best corpus entries for each query, as sentence-transformers' util.semantic_search."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from biencoder import similarity as sim
from biencoder.index.exact import check_chunk_size, chunked_top_k, score_function
from biencoder.protocol import Encoder
from biencoder.uses._inputs import embed, is_encoder

logger = logging.getLogger(__name__)


def semantic_search(
    queries: Sequence[str] | Any,
    corpus: Sequence[str] | Any,
    *,
    encoder: Encoder | None = None,
    top_k: int = 10,
    similarity: str = "cosine",
    query_chunk_size: int = 100,
    corpus_chunk_size: int = 500_000,
    batch_size: int = 32,
    show_progress: bool | None = None,
) -> list[list[dict[str, int | float]]]:
    """For each query, up to ``top_k`` hits ``{"corpus_id": row, "score": s}``, best first.

    ``queries`` and ``corpus`` are texts (then ``encoder`` encodes them) or embeddings [n, dim].
    Exact search in chunks of ``query_chunk_size`` x ``corpus_chunk_size``; ties go to the lower
    corpus row. For an index that persists, grows and can be approximate, see
    :class:`biencoder.index.Index`.
    """
    if encoder is not None and not is_encoder(encoder):
        raise TypeError(f"encoder must follow the Encoder protocol, got {type(encoder).__name__}")
    check_chunk_size(top_k, "top_k")
    fn = sim.SimilarityFunction.parse(similarity)
    q = _side(encoder, queries, "queries", batch_size, show_progress)
    c = _side(encoder, corpus, "corpus", batch_size, show_progress)
    if q.shape[0] and c.shape[0] and q.shape[1] != c.shape[1]:
        raise ValueError(f"dimension mismatch: queries have dimension {q.shape[1]}, corpus {c.shape[1]}")
    if fn is sim.SimilarityFunction.COSINE:
        q, c, fn = sim.normalize(q), sim.normalize(c), sim.SimilarityFunction.DOT
    if c.shape[0] == 0:
        return [[] for _ in range(q.shape[0])]
    scores, idx = chunked_top_k(
        q,
        c,
        top_k,
        score_fn=score_function(fn),
        corpus_chunk_size=corpus_chunk_size,
        query_chunk_size=query_chunk_size,
    )
    return [
        [{"corpus_id": int(i), "score": float(s)} for s, i in zip(srow, irow, strict=True)]
        for srow, irow in zip(scores, idx, strict=True)
    ]


def _side(encoder: Encoder | None, data: Any, name: str, batch_size: int, show: bool | None) -> Any:
    texts = isinstance(data, str) or (
        isinstance(data, Sequence) and len(data) > 0 and isinstance(data[0], str)
    )
    if texts:
        if encoder is None:
            raise ValueError(f"{name} are texts: pass encoder= to encode them, or pass embeddings")
        return embed(
            encoder,
            [data] if isinstance(data, str) else data,
            batch_size=batch_size,
            show_progress=show,
            name=name,
        )
    return embed(data, None, name=name)
