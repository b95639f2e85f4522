"""Approximate nearest-neighbour search: an HNSW graph through faiss.

faiss rather than usearch, measured on this project's machine (100,000 random unit vectors of
dim 384, 2 threads, M=16, efConstruction=128): faiss built the graph in 23.6 s against
usearch's 67.3 s and answered a query in 0.24-1.7 ms against 0.9-5.5 ms at the same recall
(`benchmarks/search.py --sections libraries` repeats this). faiss has no removal from an HNSW
graph, so removed rows stay in it as tombstones and are filtered out during the search itself
(an ``IDSelectorBitmap``), which keeps k results without over-fetching.

The graph's ids are row positions: every row is added in row order, removed ones included.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.index.quantize import Quantization
from biencoder.similarity import SimilarityFunction

logger = logging.getLogger(__name__)

HNSW_METRICS = (SimilarityFunction.COSINE, SimilarityFunction.DOT, SimilarityFunction.EUCLIDEAN)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("HNSW search needs faiss: pip install faiss-cpu") from exc
    return faiss


class Hnsw:
    """An HNSW graph over row positions, with scores where larger means more similar."""

    def __init__(self, graph: Any, metric: SimilarityFunction, quantization: Quantization) -> None:
        self._graph = graph
        self.metric = metric
        self.quantization = quantization

    @classmethod
    def create(
        cls,
        dim: int,
        metric: SimilarityFunction,
        quantization: Quantization,
        connectivity: int,
        expansion_add: int,
    ) -> Hnsw:
        if metric not in HNSW_METRICS:
            valid = ", ".join(m.value for m in HNSW_METRICS)
            raise ValueError(f"HNSW supports the metrics {valid}, not {metric.value!r}")
        faiss = _faiss()
        fmetric = faiss.METRIC_L2 if metric is SimilarityFunction.EUCLIDEAN else faiss.METRIC_INNER_PRODUCT
        if quantization is Quantization.BINARY:
            graph = faiss.IndexBinaryHNSW(((dim + 7) // 8) * 8, connectivity)  # hamming on packed bits
        elif quantization is Quantization.INT8:
            graph = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, connectivity, fmetric)
        else:
            graph = faiss.IndexHNSWFlat(dim, connectivity, fmetric)
        graph.hnsw.efConstruction = expansion_add
        return cls(graph, metric, quantization)

    @classmethod
    def load(cls, path: Path, metric: SimilarityFunction, quantization: Quantization) -> Hnsw:
        faiss = _faiss()
        try:
            if quantization is Quantization.BINARY:
                graph = faiss.read_index_binary(str(path))
            else:
                graph = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ValueError(f"{path}: unreadable HNSW graph ({str(exc).splitlines()[0]})") from None
        return cls(graph, metric, quantization)

    def __len__(self) -> int:
        return int(self._graph.ntotal)

    @property
    def needs_training(self) -> bool:
        return not bool(self._graph.is_trained)

    def train(self, vectors: NDArray[np.float32]) -> None:
        """int8 graphs learn each dimension's range from the first vectors added."""
        self._graph.train(np.ascontiguousarray(vectors, dtype=np.float32))

    def add(self, vectors: NDArray[Any]) -> None:
        """Append rows (positions continue from ``len(self)``): float32, or packed bits if binary."""
        self._graph.add(np.ascontiguousarray(vectors))

    def search(
        self, queries: NDArray[Any], k: int, expansion_search: int, alive: NDArray[np.bool_] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(scores [q, k], positions [q, k]); slots with nothing found have position -1, score -inf."""
        faiss = _faiss()
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(expansion_search, k)
        bitmap = None
        if alive is not None and not alive.all():
            bitmap = np.packbits(alive, bitorder="little")  # must outlive the search
            params.sel = faiss.IDSelectorBitmap(len(alive), faiss.swig_ptr(bitmap))
        dist, idx = self._graph.search(np.ascontiguousarray(queries), k, params=params)
        del bitmap
        found = idx >= 0
        if self.quantization is Quantization.BINARY:
            scores = -dist.astype(np.float32)  # fewer differing bits is better
        elif self.metric is SimilarityFunction.EUCLIDEAN:
            scores = -np.sqrt(np.maximum(dist, 0.0))
        else:
            scores = dist
        return np.where(found, scores, -np.inf).astype(np.float32), idx.astype(np.int64)

    def save(self, path: Path) -> None:
        faiss = _faiss()
        if self.quantization is Quantization.BINARY:
            faiss.write_index_binary(self._graph, str(path))
        else:
            faiss.write_index(self._graph, str(path))
