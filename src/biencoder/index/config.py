"""The index's settings and its search result: frozen, keyword-only, checked on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

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
    """For each query, its hits best first: ``ids[q][r]`` with score ``scores[q][r]``."""

    ids: list[list[str]]
    scores: list[list[float]]

    def __len__(self) -> int:
        return len(self.ids)

    def hits(self, query: int) -> list[dict[str, Any]]:
        """``[{"id": ..., "score": ...}, ...]`` for one query."""
        return [{"id": i, "score": s} for i, s in zip(self.ids[query], self.scores[query], strict=True)]
