"""Similarity functions on embeddings, as sentence-transformers defines them, in numpy.

Pure numpy so that every runtime (PyTorch, ONNX) and the index share one definition.
Euclidean and Manhattan are *negated* distances, so that for every function larger means
more similar.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]


class SimilarityFunction(StrEnum):
    COSINE = "cosine"
    DOT = "dot"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"

    @classmethod
    def parse(cls, value: str | SimilarityFunction) -> SimilarityFunction:
        """Convert a name (also sentence-transformers' aliases ``cos_sim``, ``dot_product``...)."""
        if isinstance(value, SimilarityFunction):
            return value
        aliases = {
            "cos_sim": cls.COSINE,
            "dot_score": cls.DOT,
            "dot_product": cls.DOT,
            "euclidean_sim": cls.EUCLIDEAN,
            "manhattan_sim": cls.MANHATTAN,
        }
        name = str(value).lower()
        if name in aliases:
            return aliases[name]
        try:
            return cls(name)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown similarity function {value!r}; valid: {valid}") from None


def as_matrix(x: Any, name: str = "embeddings") -> Array:
    """A 2-D float32 array from an array, a tensor or a list; a single vector becomes [1, dim]."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    return arr


def normalize(x: Array, eps: float = 1e-12) -> Array:
    """L2-normalise rows, as torch.nn.functional.normalize (norm clamped at ``eps``)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


def cosine(a: Any, b: Any) -> Array:
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    return normalize(a) @ normalize(b).T  # [n, m]


def dot(a: Any, b: Any) -> Array:
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    return a @ b.T


def _sq_dist(a: Array, b: Array) -> Array:
    # float64 for the expansion |a|^2 + |b|^2 - 2ab: float32 cancels badly for near-equal rows.
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.T)
    return np.maximum(d, 0.0)


def euclidean(a: Any, b: Any) -> Array:
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    return (-np.sqrt(_sq_dist(a, b))).astype(np.float32)


def manhattan(a: Any, b: Any) -> Array:
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
    for i in range(a.shape[0]):  # row by row: bounded memory, [m, dim] at a time
        out[i] = -np.abs(b - a[i]).sum(axis=1)
    return out


def pairwise_cosine(a: Any, b: Any) -> Array:
    a, b = _same_shape(a, b)
    return (normalize(a) * normalize(b)).sum(axis=1)


def pairwise_dot(a: Any, b: Any) -> Array:
    a, b = _same_shape(a, b)
    return (a * b).sum(axis=1)


def pairwise_euclidean(a: Any, b: Any) -> Array:
    a, b = _same_shape(a, b)
    return -np.sqrt(((a - b) ** 2).sum(axis=1))


def pairwise_manhattan(a: Any, b: Any) -> Array:
    a, b = _same_shape(a, b)
    return -np.abs(a - b).sum(axis=1)


def _same_shape(a: Any, b: Any) -> tuple[Array, Array]:
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"pairwise similarity needs equal shapes, got {a.shape} and {b.shape}")
    return a, b


MATRIX: dict[SimilarityFunction, Callable[[Any, Any], Array]] = {
    SimilarityFunction.COSINE: cosine,
    SimilarityFunction.DOT: dot,
    SimilarityFunction.EUCLIDEAN: euclidean,
    SimilarityFunction.MANHATTAN: manhattan,
}
PAIRWISE: dict[SimilarityFunction, Callable[[Any, Any], Array]] = {
    SimilarityFunction.COSINE: pairwise_cosine,
    SimilarityFunction.DOT: pairwise_dot,
    SimilarityFunction.EUCLIDEAN: pairwise_euclidean,
    SimilarityFunction.MANHATTAN: pairwise_manhattan,
}


def similarity(a: Any, b: Any, fn: str | SimilarityFunction = SimilarityFunction.COSINE) -> Array:
    """[n, m] similarity matrix of ``a`` [n, dim] and ``b`` [m, dim]."""
    return MATRIX[SimilarityFunction.parse(fn)](a, b)


def similarity_pairwise(a: Any, b: Any, fn: str | SimilarityFunction = SimilarityFunction.COSINE) -> Array:
    """[n] similarity of row i of ``a`` with row i of ``b``."""
    return PAIRWISE[SimilarityFunction.parse(fn)](a, b)
