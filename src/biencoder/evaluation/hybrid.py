"""Retrieval in three modes for the evaluators and ``biencoder tune-fusion``: dense, lexical, hybrid.

The lexical side is :class:`~biencoder.index.lexical.LexicalIndex` (BM25 by ``bm25s``) and the
hybrid lists are fused by :func:`biencoder.index.hybrid.fuse_sides`, which calls
:func:`~biencoder.index.fusion.convex_fusion` or :func:`~biencoder.index.fusion.reciprocal_rank_fusion`:
the very code ``Index.search`` runs, so an evaluated hybrid setting is the one search serves.
Candidates are integer keys (corpus or index row positions); equal fused scores go to the smaller
key, as in search.

Results of the modes are named after the task: ``scifact`` (dense), ``scifact-bm25`` (lexical),
``scifact-hybrid`` (hybrid); see :func:`result_name`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.evaluation import metrics
from biencoder.index.config import SearchResult
from biencoder.index.fusion import (
    DEFAULT_CANDIDATES,
    Fusion,
    ScoreNormalization,
    SearchMode,
    check_alpha,
)
from biencoder.index.hybrid import SearchSettings, fuse_sides
from biencoder.index.lexical import Hits, LexicalConfig, LexicalIndex

logger = logging.getLogger(__name__)

SUFFIXES: dict[SearchMode, str] = {
    SearchMode.DENSE: "",
    SearchMode.LEXICAL: "-bm25",
    SearchMode.HYBRID: "-hybrid",
}
# Ranking depth the metrics read (map@100 reads 100).
RANK_DEPTH = max(*metrics.K_VALUES, metrics.MRR_K, metrics.NDCG_K, metrics.MAP_K)


def result_name(task: str, mode: SearchMode) -> str:
    """The results key of one mode: the task name, ``-bm25`` for lexical, ``-hybrid`` for hybrid."""
    return task + SUFFIXES[mode]


def parse_modes(value: str | Sequence[str | SearchMode]) -> tuple[SearchMode, ...]:
    """``"dense,lexical,hybrid"`` (or a sequence) as modes, in the order given, each once."""
    items = value.split(",") if isinstance(value, str) else list(value)
    words = [str(item).strip() for item in items if str(item).strip()]
    if not words:
        valid = ", ".join(m.value for m in SearchMode)
        raise ValueError(f"no retrieval mode given; valid: {valid}")
    return tuple(dict.fromkeys(SearchMode.parse(w) for w in words))


def needs_encoder(modes: Sequence[SearchMode]) -> bool:
    return any(m is not SearchMode.LEXICAL for m in modes)


@dataclass(frozen=True, kw_only=True, slots=True)
class FusionSettings:
    """How hybrid lists are fused, defaulted exactly as an untuned ``Index.search`` defaults them:
    ``fusion`` (convex or rrf); convex weighs the dense side by ``alpha`` (None: ``DEFAULT_ALPHA``;
    rrf takes none) after ``normalization`` (None: calibrated), moved per query by ``adaptive``
    (None: on only when neither alpha nor normalization is given); each side gives its
    ``candidates`` best (at least the ranking depth)."""

    fusion: Fusion = Fusion.CONVEX
    alpha: float | None = None
    normalization: ScoreNormalization | None = None
    adaptive: bool | None = None
    candidates: int = DEFAULT_CANDIDATES

    def __post_init__(self) -> None:
        fusion = Fusion.parse(self.fusion)
        object.__setattr__(self, "fusion", fusion)
        if self.normalization is not None:
            object.__setattr__(self, "normalization", ScoreNormalization.parse(self.normalization))
        if self.alpha is not None and fusion is not Fusion.CONVEX:
            raise ValueError(f"alpha weighs convex fusion; {fusion.value} fusion takes none")
        if self.alpha is not None:
            check_alpha(self.alpha)
        c = self.candidates
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"candidates must be a positive integer, got {c!r}")

    def search_settings(self, k: int) -> SearchSettings:
        """The hybrid search settings that return the top ``k``."""
        return SearchSettings.resolve(
            k=k,
            mode=SearchMode.HYBRID,
            fusion=self.fusion,
            alpha=self.alpha,
            normalization=self.normalization,
            candidates=self.candidates,
            has_lexical=True,
            record=None,
            adaptive=self.adaptive,
        )

    @property
    def needs_scales(self) -> bool:
        """Calibrated fusion divides BM25 scores by each query's scale (LexicalIndex.query_scales)."""
        return self.search_settings(1).normalization is ScoreNormalization.CALIBRATED

    def to_dict(self) -> dict[str, Any]:
        resolved = self.search_settings(1)
        convex = resolved.fusion is Fusion.CONVEX
        return {
            "fusion": resolved.fusion.value,
            "alpha": resolved.alpha if convex else None,
            "normalization": resolved.normalization.value if convex else None,
            "adaptive": resolved.adaptive if convex else None,
            "candidates": self.candidates,
        }


def build_lexical(texts: Sequence[str], config: LexicalConfig | None = None) -> LexicalIndex:
    """BM25 over ``texts`` (row n is text n), its matrix built once."""
    lexical = LexicalIndex(config)
    lexical.add(range(len(texts)), texts)
    lexical.matrix()
    return lexical


def fused_keys(
    dense_scores: NDArray[np.float32],
    dense_keys: NDArray[np.int64],
    lexical: list[Hits],
    settings: FusionSettings,
    k: int,
    scales: NDArray[np.float64] | None = None,
) -> list[NDArray[np.int64]]:
    """Each query's top ``k`` keys, fused as hybrid search fuses them.

    ``dense_scores`` / ``dense_keys`` [q, n] are each query's dense candidates, best first (key
    -1: none); ``lexical[q]`` its BM25 hits, ``scales[q]`` its BM25 scale (calibrated fusion).
    A query without lexical hits keeps its dense list.
    """
    fused = fuse_sides(dense_scores, dense_keys, lexical, settings.search_settings(k), scales)
    return [f.keys for f in fused]


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Candidates:
    """Both sides' candidate lists of each query, once, for fusing at many settings.

    Keys index ``ids``; ``dense_keys`` / ``dense_scores`` are [q, n] (key -1: none), ``lexical[q]``
    is query q's (keys, scores) BM25 list.
    """

    ids: list[str]
    dense_keys: NDArray[np.int64]
    dense_scores: NDArray[np.float32]
    lexical: list[Hits]
    scales: NDArray[np.float64] | None = None  # each query's BM25 scale, for calibrated fusion

    @classmethod
    def from_results(
        cls,
        dense: SearchResult,
        lexical: SearchResult,
        order: Sequence[str],
        scales: NDArray[np.float64] | None = None,
    ) -> Candidates:
        """Dense and lexical search results over the rows ``order`` (an index's live ids, in row
        order, so that keys break ties as the index's row positions do)."""
        if len(dense) != len(lexical):
            raise ValueError(f"{len(dense)} dense results but {len(lexical)} lexical ones")
        key = {doc: n for n, doc in enumerate(order)}
        width = max((len(row) for row in dense.ids), default=0)
        keys = np.full((len(dense), width), -1, dtype=np.int64)
        scores = np.zeros((len(dense), width), dtype=np.float32)
        for q, (ids, values) in enumerate(zip(dense.ids, dense.scores, strict=True)):
            keys[q, : len(ids)] = [key[d] for d in ids]
            scores[q, : len(ids)] = values
        hits = [
            (np.array([key[d] for d in ids], dtype=np.int64), np.asarray(values, dtype=np.float32))
            for ids, values in zip(lexical.ids, lexical.scores, strict=True)
        ]
        return cls(ids=list(order), dense_keys=keys, dense_scores=scores, lexical=hits, scales=scales)

    def __len__(self) -> int:
        return len(self.lexical)

    def rankings(self, settings: FusionSettings, k: int = RANK_DEPTH) -> list[list[str]]:
        """Each query's fused top ``k`` ids."""
        fused = fused_keys(self.dense_scores, self.dense_keys, self.lexical, settings, k, self.scales)
        return [[self.ids[p] for p in keys] for keys in fused]


def alpha_scores(
    candidates: Candidates,
    qrels: Sequence[Mapping[str, int]],
    grid: Sequence[float],
    *,
    metric: str = "ndcg@10",
    normalization: ScoreNormalization = ScoreNormalization.MINMAX,
    threshold: int = 1,
) -> NDArray[np.float64]:
    """[queries, alphas]: each query's ``metric`` when convex fusion weighs the dense side by each alpha.

    ``qrels[q]`` are query q's judgements; every query needs a document at ``threshold``.
    """
    if len(qrels) != len(candidates):
        raise ValueError(f"{len(qrels)} qrels for {len(candidates)} queries")
    known = metrics.metric_names()
    if metric not in known:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(known)}")
    out = np.zeros((len(qrels), len(grid)), dtype=np.float64)
    for a, alpha in enumerate(grid):
        settings = FusionSettings(
            alpha=alpha, normalization=normalization, candidates=max(1, candidates.dense_keys.shape[1])
        )
        for q, ranking in enumerate(candidates.rankings(settings)):
            out[q, a] = metrics.query_metrics(ranking, qrels[q], threshold=threshold)[metric]
    return out
