"""Lexical and hybrid search on the database backends: the database's own full-text search as the
lexical side, fused with its vector search by the in-process index's fusion.

A backend hands over, per query, its candidates best first as ``(ids, scores)``: the dense side
from its vector search, the lexical side from its full-text index (LanceDB's inverted index,
scored BM25-style; PostgreSQL's ``tsvector`` ranked by ``ts_rank_cd``). The ids are mapped to
integer keys, one table per search, and :func:`biencoder.index.hybrid.fuse_sides` fuses them as
``Index.search`` does: one fusion (:mod:`biencoder.index.fusion`), whichever store.

Normalisation defaults to ``minmax`` here, not ``calibrated`` as in ``Index.search``: calibrated
divides each BM25 score by the query's BM25 scale, the sum of its terms' idf over the index's own
statistics. Neither database shares that ranker or exposes that sum: ``ts_rank_cd`` has no idf at
all (it counts covers of the query terms, in [0, 1)-ish), and LanceDB's BM25 has its own
tokenizer and parameters. A scale borrowed from elsewhere would weigh the sides by accident, so
each list is stretched over its own range instead. ``adaptive`` stays as
:meth:`~biencoder.index.hybrid.SearchSettings.resolve` decides (on for the untuned default); a
caller may still ask for ``zscore`` (``calibrated`` then divides by 1: the raw score).

A store built by ``biencoder index --lexical`` carries the label-free fusion decision in its
``fusion.json`` (:mod:`biencoder.index.fusion_choice`), made with the database's own rankers over
min-max candidates: it keeps the dense order unless the probes show the database's lexical side
helps (pgvector's ``ts_rank_cd``, without idf, seldom does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.index.config import FusionRecord, SearchResult
from biencoder.index.fusion import ScoreNormalization, SearchMode
from biencoder.index.hybrid import (
    SearchSettings,
    fuse_sides,
    hybrid_result,
    lexical_result,
    query_words,
)
from biencoder.index.lexical import Hits
from biencoder.stores.contract import NO_DATABASE_LEXICAL, SearchNotOffered

logger = logging.getLogger(__name__)

DATABASE_NORMALIZATION = ScoreNormalization.MINMAX  # see the module docstring
Candidates = list[tuple[list[str], NDArray[np.float32]]]  # per query: ids and scores, best first
DenseLists = Callable[[Any, int], Candidates]  # (queries, n) -> each query's n best by vector
LexicalLists = Callable[[list[str], int], Candidates]  # (query words, n) -> each one's n best by text


def database_settings(
    *,
    backend: str,
    has_lexical: bool,
    k: object,
    mode: object,
    fusion: object,
    alpha: object,
    normalization: object,
    candidates: object,
    adaptive: object,
    record: FusionRecord | None = None,
) -> SearchSettings:
    """:meth:`SearchSettings.resolve` for a database store: its ``record`` (``fusion.json``) if
    any, else normalization defaulting to min-max; lexical or hybrid without a lexical part is
    :class:`SearchNotOffered`."""
    requested = None if mode is None else SearchMode.parse(str(mode))
    if requested not in (None, SearchMode.DENSE) and not has_lexical:
        raise SearchNotOffered(NO_DATABASE_LEXICAL.format(backend=backend))
    settings = SearchSettings.resolve(
        k=k,
        mode=requested,
        fusion=fusion,
        alpha=alpha,
        normalization=normalization,
        candidates=candidates,
        has_lexical=has_lexical,
        record=record,
        adaptive=adaptive,
    )
    if normalization is None and record is None:
        settings = replace(settings, normalization=DATABASE_NORMALIZATION)
    return settings


class _Keys:
    """String ids -> int64 keys for the fusion: each id's place among all the search's ids, sorted,
    so fused ties go to the smaller id whatever other queries share the batch."""

    def __init__(self, lists: Sequence[Candidates]) -> None:
        self.names = sorted({i for part in lists for ids, _ in part for i in ids})
        self._of = {name: n for n, name in enumerate(self.names)}

    def __call__(self, ids: Sequence[str]) -> NDArray[np.int64]:
        return np.fromiter((self._of[i] for i in ids), dtype=np.int64, count=len(ids))

    def hits(self, lists: Candidates) -> list[Hits]:
        return [(self(ids), np.asarray(scores, dtype=np.float32)) for ids, scores in lists]


def run_search(
    settings: SearchSettings,
    queries: Any,
    query_texts: Sequence[str] | None,
    *,
    dense: DenseLists,
    lexical: LexicalLists,
) -> SearchResult:
    """One search in ``settings.mode`` from a backend's two candidate sources.

    Dense: the ``k`` best by vector. Lexical: the ``k`` best by the full-text index (the query
    words: ``queries`` if texts, else ``query_texts``). Hybrid: each side's ``candidates`` (at
    least ``k``) best, fused by :func:`~biencoder.index.hybrid.fuse_sides`.
    """
    if settings.mode is SearchMode.DENSE:
        if query_texts is not None:
            raise ValueError("query_texts are read by lexical and hybrid search only, not dense")
        lists = dense(queries, settings.k)
        return SearchResult(ids=[ids for ids, _ in lists], scores=[[float(s) for s in sc] for _, sc in lists])
    texts = query_words(queries, query_texts)
    if settings.mode is SearchMode.LEXICAL:
        lexical_lists = lexical(texts, settings.k)
        keys = _Keys([lexical_lists])
        return lexical_result(keys.hits(lexical_lists), keys.names)
    fetch = max(settings.candidates, settings.k)
    dense_lists = dense([queries] if isinstance(queries, str) else queries, fetch)
    if len(dense_lists) != len(texts):
        raise ValueError(f"got {len(dense_lists)} query vectors but {len(texts)} query_texts")
    lexical_lists = lexical(texts, fetch)
    keys = _Keys([dense_lists, lexical_lists])
    width = max((len(ids) for ids, _ in dense_lists), default=0)
    positions = np.full((len(texts), width), -1, dtype=np.int64)  # [q, width]; -1: nothing
    scores = np.zeros((len(texts), width), dtype=np.float32)  # [q, width]
    for row, (ids, sc) in enumerate(dense_lists):
        positions[row, : len(ids)] = keys(ids)
        scores[row, : len(ids)] = sc
    hits = keys.hits(lexical_lists)
    return hybrid_result(fuse_sides(scores, positions, hits, settings), hits, keys.names)
