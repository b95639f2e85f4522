"""Search modes of :class:`~biencoder.index.Index`: the settings of one search, the query words, and
how each side's lists become a :class:`SearchResult`.

Works on plain data (row positions, scores, the row ids), so it never imports ``Index``; the
fusion arithmetic itself is in :mod:`biencoder.index.fusion`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.index.config import FusionRecord, SearchResult
from biencoder.index.fusion import (
    DEFAULT_ALPHA,
    Fused,
    Fusion,
    ScoreNormalization,
    SearchMode,
    check_alpha,
    convex_fusion,
    reciprocal_rank_fusion,
)
from biencoder.index.lexical import Hits

logger = logging.getLogger(__name__)

NO_LEXICAL_PART = (
    "this index has no lexical part: build it with `biencoder index ... --lexical` "
    "(or Index(..., lexical=LexicalConfig()))"
)
NO_LEXICAL_MATCH = "no lexical match (every query word is a stop word or in no live row)"


def _positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchSettings:
    """One search's choices, parsed and defaulted once (see :meth:`resolve`)."""

    mode: SearchMode
    fusion: Fusion
    alpha: float
    normalization: ScoreNormalization
    adaptive: bool
    k: int
    candidates: int

    @classmethod
    def resolve(
        cls,
        *,
        k: object,
        mode: object,
        fusion: object,
        alpha: object,
        normalization: object,
        candidates: object,
        has_lexical: bool,
        record: FusionRecord | None,
        adaptive: object = None,
    ) -> SearchSettings:
        """Check and default: mode None is hybrid with a lexical part, else dense; fusion,
        normalization and alpha None take the ``record``'s (tuned or chosen), else convex,
        calibrated, ``DEFAULT_ALPHA``; ``adaptive`` None is the record's when neither alpha nor
        normalization is given, else on only for the untuned default (no record), since an
        alpha the caller gives means that weight."""
        k, candidates = _positive(k, "k"), _positive(candidates, "candidates")
        if mode is None:
            search_mode = SearchMode.HYBRID if has_lexical else SearchMode.DENSE
        else:
            search_mode = SearchMode.parse(str(mode))
        fuse = Fusion.parse(str(fusion if fusion is not None else record.fusion if record else "convex"))
        own = alpha is None and normalization is None  # the record's (or the default's) setting
        default_adaptive = (record.adaptive if record is not None else True) if own else False
        if normalization is not None:
            norm = normalization
        else:
            norm = record.normalization if record is not None else "calibrated"
        if adaptive is not None and not isinstance(adaptive, bool):
            raise ValueError(f"adaptive must be true, false or None, got {adaptive!r}")
        if alpha is not None and fuse is not Fusion.CONVEX:
            raise ValueError(f"alpha weighs convex fusion; {fuse.value} fusion takes none")
        if alpha is None:
            alpha = record.alpha if record is not None else DEFAULT_ALPHA
        if search_mode is not SearchMode.DENSE and not has_lexical:
            raise ValueError(NO_LEXICAL_PART)
        return cls(
            mode=search_mode,
            fusion=fuse,
            alpha=check_alpha(alpha),
            normalization=ScoreNormalization.parse(str(norm)),
            adaptive=default_adaptive if adaptive is None else adaptive,
            k=k,
            candidates=candidates,
        )


def is_texts(data: object) -> bool:
    """A string, or a non-empty sequence / numpy array whose first item is a string."""
    if isinstance(data, str):
        return True
    if isinstance(data, np.ndarray):
        return data.dtype.kind in "UO" and data.size > 0 and isinstance(data.flat[0], str)
    return isinstance(data, Sequence) and len(data) > 0 and isinstance(data[0], str)


def text_list(data: Any) -> list[Any]:
    """Texts (one string, a sequence, a numpy array of strings) as a list."""
    if isinstance(data, str):
        return [data]
    return list(data.tolist() if isinstance(data, np.ndarray) else data)


def row_words(data: Any, texts: Sequence[str] | None) -> list[str]:
    """The texts an index's lexical part tokenises for an add: ``texts``, else ``data`` if texts."""
    if texts is not None:
        return list(texts)
    if is_texts(data):
        return text_list(data)
    raise ValueError(
        "this index has a lexical part: add needs the row texts, as data (with an encoder) or texts="
    )


def query_words(queries: Any, query_texts: Sequence[str] | None) -> list[str]:
    """The words of each query for lexical search: the queries if texts, else ``query_texts``."""
    if is_texts(queries):
        if query_texts is not None:
            raise ValueError("the queries are texts already: pass query_texts only with query vectors")
        texts = text_list(queries)
    elif query_texts is None:
        raise ValueError(
            "lexical and hybrid search need the query words: pass texts as queries, "
            "or query_texts= beside query vectors"
        )
    else:
        texts = text_list(query_texts)
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"query {n} is not a string: {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"query {n} is empty: lexical search needs words")
    return texts


def fuse_sides(
    dense_scores: NDArray[np.float32],
    dense_positions: NDArray[np.int64],
    lexical: list[Hits],
    settings: SearchSettings,
    lexical_scales: NDArray[np.float64] | None = None,
) -> list[Fused]:
    """Each query's dense row [fetch] (position -1: nothing) and lexical hits, fused; the top k.

    A query without lexical hits keeps its dense list as it is: the dense order, the dense scores.
    """
    fused = []
    scales = lexical_scales if lexical_scales is not None else np.ones(len(lexical))
    for srow, prow, (lk, ls), scale in zip(dense_scores, dense_positions, lexical, scales, strict=True):
        ok = prow >= 0
        dk, ds = prow[ok], srow[ok].astype(np.float64)
        if not len(lk):
            top = ds[: settings.k]
            fused.append(
                Fused(keys=dk[: settings.k], scores=top, dense=top, lexical=np.full(len(top), np.nan))
            )
        elif settings.fusion is Fusion.RRF:
            fused.append(reciprocal_rank_fusion(dk, ds, lk, ls, k=settings.k))
        else:
            fused.append(
                convex_fusion(
                    dk,
                    ds,
                    lk,
                    ls,
                    alpha=settings.alpha,
                    k=settings.k,
                    normalization=settings.normalization,
                    lexical_scale=float(scale) if scale > 0 else 1.0,
                    adaptive=settings.adaptive,
                )
            )
    return fused


def dense_result(
    scores: NDArray[np.float32], positions: NDArray[np.int64], ids: Sequence[str]
) -> SearchResult:
    """Dense rows [q, k] (position -1: nothing) as a result."""
    out_ids, out_scores = [], []
    for srow, prow in zip(scores, positions, strict=True):
        ok = prow >= 0
        out_ids.append([ids[p] for p in prow[ok]])
        out_scores.append([float(s) for s in srow[ok]])
    return SearchResult(ids=out_ids, scores=out_scores)


def _floats(values: NDArray[np.float64]) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def hybrid_result(fused: list[Fused], lexical: list[Hits], ids: Sequence[str]) -> SearchResult:
    """Fused lists as a result (keys are row positions into ``ids``); a note where a query's lexical
    side was empty (its hits are then the dense ones, see :func:`fuse_sides`)."""
    return SearchResult(
        ids=[[ids[p] for p in f.keys] for f in fused],
        scores=[[float(v) for v in f.scores] for f in fused],
        dense_scores=[_floats(f.dense) for f in fused],
        lexical_scores=[_floats(f.lexical) for f in fused],
        notes=[None if len(pos) else f"{NO_LEXICAL_MATCH}: dense results only" for pos, _ in lexical],
        mode=SearchMode.HYBRID.value,
    )


def lexical_result(hits: list[Hits], ids: Sequence[str]) -> SearchResult:
    """BM25 hits as a result; a query without any gets no hits and a note."""
    return SearchResult(
        ids=[[ids[p] for p in pos] for pos, _ in hits],
        scores=[[float(x) for x in scores] for _, scores in hits],
        notes=[None if len(pos) else NO_LEXICAL_MATCH for pos, _ in hits],
        mode=SearchMode.LEXICAL.value,
    )
