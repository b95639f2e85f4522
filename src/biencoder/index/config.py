"""The index's settings, its search result and its tuned fusion record: frozen, checked on construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from numbers import Real
from typing import Any

from biencoder.index.fusion import Fusion, ScoreNormalization, check_alpha
from biencoder.index.hnsw import HNSW_METRICS
from biencoder.index.quantize import Quantization
from biencoder.similarity import SimilarityFunction


class IndexKind(StrEnum):
    EXACT = "exact"  # chunked matrix products over every row: exact, memory bounded by chunk size
    HNSW = "hnsw"  # approximate graph search (faiss), for large corpora

    @classmethod
    def parse(cls, value: str | IndexKind) -> IndexKind:
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"unknown index kind {value!r}; valid: exact, hnsw") from None


def _positive(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexConfig:
    """How vectors are compared, stored and searched.

    ``metric``: cosine, dot, euclidean or manhattan (HNSW: the first three; quantized: cosine or
    dot). ``quantization``: none, int8 or binary; quantized search is followed by rescoring the
    ``k * rescore_multiplier`` best candidates with the float32 vectors. ``chunk_size`` corpus
    rows and ``query_chunk_size`` queries make one matrix product in exact search: peak memory
    is about ``16 * query_chunk_size * chunk_size`` bytes (128 MiB by default), whatever the
    corpus size.
    ``connectivity`` (M), ``expansion_add`` (efConstruction), ``expansion_search`` (efSearch)
    tune the HNSW graph.
    """

    metric: str = "cosine"
    kind: str = "exact"
    quantization: str = "none"
    rescore_multiplier: int = 4
    chunk_size: int = 32_768
    query_chunk_size: int = 256
    connectivity: int = 32
    expansion_add: int = 200
    expansion_search: int = 128

    def __post_init__(self) -> None:
        metric = SimilarityFunction.parse(self.metric)
        kind = IndexKind.parse(self.kind)
        quant = Quantization.parse(self.quantization)
        for name in ("rescore_multiplier", "chunk_size", "query_chunk_size", "connectivity"):
            _positive(getattr(self, name), name)
        for name in ("expansion_add", "expansion_search"):
            _positive(getattr(self, name), name)
        if kind is IndexKind.HNSW and metric not in HNSW_METRICS:
            valid = ", ".join(m.value for m in HNSW_METRICS)
            raise ValueError(f"an hnsw index supports the metrics {valid}, not {metric.value!r}")
        if quant is not Quantization.NONE and metric not in (
            SimilarityFunction.COSINE,
            SimilarityFunction.DOT,
        ):
            raise ValueError(
                f"{quant.value} quantization supports the metrics cosine and dot, not {metric.value!r}"
            )
        object.__setattr__(self, "metric", metric.value)
        object.__setattr__(self, "kind", kind.value)
        object.__setattr__(self, "quantization", quant.value)

    @property
    def similarity(self) -> SimilarityFunction:
        return SimilarityFunction(self.metric)

    @property
    def index_kind(self) -> IndexKind:
        return IndexKind(self.kind)

    @property
    def quant(self) -> Quantization:
        return Quantization(self.quantization)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown index config fields {unknown}; valid: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """For each query, its hits best first: ``ids[q][r]`` with score ``scores[q][r]``.

    ``mode`` is the search mode that made it. A hybrid search also gives each hit's raw
    ``dense_scores`` and ``lexical_scores`` (None where that side did not return the hit), and
    lexical and hybrid searches give ``notes[q]`` (None, or why query q's hits are one-sided).
    """

    ids: list[list[str]]
    scores: list[list[float]]
    dense_scores: list[list[float | None]] | None = None
    lexical_scores: list[list[float | None]] | None = None
    notes: list[str | None] | None = None
    mode: str = "dense"

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self, query: int) -> list[dict[str, Any]]:
        """``[{"id": ..., "score": ...}, ...]`` for one query (with dense_score, lexical_score if set)."""
        out = [{"id": i, "score": s} for i, s in zip(self.ids[query], self.scores[query], strict=True)]
        for name, side in (("dense_score", self.dense_scores), ("lexical_score", self.lexical_scores)):
            if side is not None:
                for hit, value in zip(out, side[query], strict=True):
                    hit[name] = value
        return out


def _optional_positive(value: object, name: str) -> None:
    if value is not None:
        _positive(value, name)


FUSION_SOURCES = ("tuned", "chosen")  # tune-fusion with judged queries; the label-free decision


@dataclass(frozen=True, kw_only=True, slots=True)
class FusionRecord:
    """The hybrid-search setting kept with the index (``fusion.json``), and how it was chosen.

    ``source`` "tuned": ``alpha`` (the dense weight of convex fusion) was picked from ``grid`` by
    ``cv_score`` (the cross-validated metric) over ``folds`` folds of the ``split`` queries of
    ``data`` (``biencoder tune-fusion``). "chosen": the label-free decision made when the index
    was built (:mod:`biencoder.index.fusion_choice`), with its ``evidence`` (probe counts, each
    candidate's probe MRR@10, the reason). ``adaptive``: alpha moves per query
    (:func:`~biencoder.index.fusion.adaptive_alpha`).
    """

    alpha: float
    fusion: str = "convex"
    normalization: str = "minmax"
    adaptive: bool = False
    source: str = "tuned"
    grid: tuple[float, ...] = ()
    split: str | None = None
    folds: int | None = None
    data: str | None = None
    cv_score: float | None = None
    evidence: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"adaptive must be true or false, got {self.adaptive!r}")
        if self.source not in FUSION_SOURCES:
            raise ValueError(f"unknown fusion source {self.source!r}; valid: {', '.join(FUSION_SOURCES)}")
        if self.evidence is not None and not isinstance(self.evidence, dict):
            raise ValueError(f"evidence must be a mapping or None, got {self.evidence!r}")
        object.__setattr__(self, "alpha", check_alpha(self.alpha))
        object.__setattr__(self, "fusion", Fusion.parse(self.fusion).value)
        object.__setattr__(self, "normalization", ScoreNormalization.parse(self.normalization).value)
        if isinstance(self.grid, str) or not isinstance(self.grid, tuple | list):
            raise ValueError(f"grid must be a sequence of alphas, got {self.grid!r}")
        object.__setattr__(self, "grid", tuple(check_alpha(a) for a in self.grid))
        _optional_positive(self.folds, "folds")
        for name in ("split", "data"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string or None, got {getattr(self, name)!r}")
        score = self.cv_score
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(float(score)):
                raise ValueError(f"cv_score must be a finite number or None, got {score!r}")
            object.__setattr__(self, "cv_score", float(score))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grid"] = list(self.grid)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionRecord:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fusion record fields {unknown}; valid: {sorted(known)}")
        if "alpha" not in data:
            raise ValueError("a fusion record needs alpha")
        return cls(**{**data, "grid": tuple(data.get("grid", ()))})
