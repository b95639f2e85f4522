"""The label-free fusion decision: which hybrid setting (or dense alone) a corpus gets by default.

Each candidate setting (:data:`CANDIDATES`) searches the corpus's probes (:mod:`.probes`: a piece
cut out of a document as the query, the rest of the document as its one relevant target), and
scores the reciprocal rank of the target in its top ``k``. :func:`decide` then picks a setting.
Everything here works on plain arrays (each probe's dense and lexical candidate lists), through
the same :func:`~biencoder.index.hybrid.fuse_sides` as search, so any backend can feed it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from biencoder.index.fusion import Fusion, ScoreNormalization, SearchMode
from biencoder.index.hybrid import SearchSettings, fuse_sides
from biencoder.index.lexical import Hits

logger = logging.getLogger(__name__)

K = 10  # the reciprocal rank is counted in the top 10, as MRR@10


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """One setting the decision may choose: convex fusion at ``alpha`` (1.0: the dense list as it
    is), or reciprocal rank fusion."""

    label: str
    alpha: float = 1.0
    normalization: str = "calibrated"
    adaptive: bool = False
    fusion: str = "convex"

    def settings(self, k: int, candidates: int) -> SearchSettings:
        return SearchSettings(
            mode=SearchMode.HYBRID,
            fusion=Fusion.parse(self.fusion),
            alpha=self.alpha,
            normalization=ScoreNormalization.parse(self.normalization),
            adaptive=self.adaptive,
            k=k,
            candidates=candidates,
        )


def convex_candidates(normalization: str, alphas: Sequence[float], adaptive: bool = False) -> list[Candidate]:
    tag = f"{normalization}{' adaptive' if adaptive else ''}"
    return [
        Candidate(label=f"{tag} {a:.1f}", alpha=a, normalization=normalization, adaptive=adaptive)
        for a in alphas
    ]


def fused_top(
    dense_scores: NDArray[np.float32],
    dense_positions: NDArray[np.int64],
    lexical: list[Hits],
    candidate: Candidate,
    lexical_scales: NDArray[np.float64] | None = None,
    k: int = K,
) -> list[NDArray[np.int64]]:
    """Each query's top ``k`` row positions under ``candidate``: ``dense_scores`` and
    ``dense_positions`` [queries, n] are each query's dense list (position -1: nothing),
    ``lexical`` its BM25 hits, ``lexical_scales`` its BM25 scales (calibrated candidates)."""
    fetch = dense_positions.shape[1] if dense_positions.ndim == 2 else 0
    settings = candidate.settings(k, max(fetch, k))
    scales = lexical_scales if candidate.normalization == "calibrated" else None
    return [f.keys[:k] for f in fuse_sides(dense_scores, dense_positions, lexical, settings, scales)]


def reciprocal_ranks(
    dense_scores: NDArray[np.float32],
    dense_positions: NDArray[np.int64],
    lexical: list[Hits],
    targets: NDArray[np.int64],
    candidates: Sequence[Candidate],
    lexical_scales: NDArray[np.float64] | None = None,
    k: int = K,
) -> NDArray[np.float64]:
    """[probes, candidates]: 1 / rank of each probe's target (row position ``targets[q]``) in each
    candidate's fused top ``k``, 0 when it is not there (see :func:`fused_top`)."""
    out = np.zeros((len(targets), len(candidates)), dtype=np.float64)
    for c, candidate in enumerate(candidates):
        tops = fused_top(dense_scores, dense_positions, lexical, candidate, lexical_scales, k)
        for q, top in enumerate(tops):
            hit = np.flatnonzero(top == targets[q])
            if len(hit):
                out[q, c] = 1.0 / (hit[0] + 1)
    return out
