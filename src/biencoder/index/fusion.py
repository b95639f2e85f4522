"""Fusing a dense and a lexical result list: convex combination of normalised scores, or reciprocal rank.

Pure numpy, no I/O. Each side hands over its candidates as ``keys`` (int64, e.g. row positions)
and ``scores`` (higher is better), best first or in any order. The fused list is ranked by the
fused score, ties broken by the smaller key, so the same inputs always give the same order.

- :func:`convex_fusion`: each side's scores are normalised on their own (min-max or z-score),
  a candidate one side did not return gets that side's floor (the lowest normalised score of
  its list; 0 when the list is empty), and ``fused = alpha * dense + (1 - alpha) * lexical``.
- :func:`reciprocal_rank_fusion`: ``sum over sides of 1 / (rank_constant + rank)``, ranks from 1.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from numbers import Real
from typing import Any

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

Keys = NDArray[np.int64]
Scores = NDArray[np.float64]

DEFAULT_ALPHA: float = 0.5  # weight of the dense side; chosen by measurement, see docs/search.md
DEFAULT_CANDIDATES = 1000  # each side's list length before fusion
RRF_K = 60  # reciprocal rank fusion's rank constant (Cormack et al., 2009)


def _parse_enum(cls: type[StrEnum], value: object, what: str) -> Any:
    try:
        return cls(str(value).lower())
    except ValueError:
        valid = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown {what} {value!r}; valid: {valid}") from None


class SearchMode(StrEnum):
    DENSE = "dense"  # embeddings only
    LEXICAL = "lexical"  # BM25 only: needs no encoder and no query vectors
    HYBRID = "hybrid"  # both, fused

    @classmethod
    def parse(cls, value: str | SearchMode) -> SearchMode:
        parsed: SearchMode = _parse_enum(cls, value, "search mode")
        return parsed


class Fusion(StrEnum):
    CONVEX = "convex"  # alpha * normalised dense + (1 - alpha) * normalised lexical
    RRF = "rrf"  # reciprocal rank fusion: ranks only, no alpha

    @classmethod
    def parse(cls, value: str | Fusion) -> Fusion:
        parsed: Fusion = _parse_enum(cls, value, "fusion")
        return parsed


class ScoreNormalization(StrEnum):
    MINMAX = "minmax"  # (s - min) / (max - min): the list spans [0, 1]
    ZSCORE = "zscore"  # (s - mean) / std

    @classmethod
    def parse(cls, value: str | ScoreNormalization) -> ScoreNormalization:
        parsed: ScoreNormalization = _parse_enum(cls, value, "score normalization")
        return parsed


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float in [0, 1]; anything else (bool, NaN, a string, out of range) is a ValueError."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def normalize_scores(scores: NDArray[Any], method: str | ScoreNormalization) -> Scores:
    """Scores mapped onto a common scale: min-max (all equal: 1.0) or z-score (std 0: 0.0)."""
    norm = ScoreNormalization.parse(method)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-D array, got shape {s.shape}")
    if s.size == 0:
        return s.copy()
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if norm is ScoreNormalization.MINMAX:
        low, high = s.min(), s.max()
        return np.ones_like(s) if high == low else (s - low) / (high - low)
    std = s.std()
    return np.zeros_like(s) if std == 0 else (s - s.mean()) / std


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Fused:
    """A fused list, best first: ``keys`` [n] with ``scores`` [n] (fused), and each side's raw score.

    ``dense`` and ``lexical`` hold the score that side gave the candidate, NaN where that side did
    not return it.
    """

    keys: Keys
    scores: Scores
    dense: Scores
    lexical: Scores

    def __post_init__(self) -> None:
        n = len(self.keys)
        for name in ("keys", "scores", "dense", "lexical"):
            arr = getattr(self, name)
            if arr.ndim != 1 or len(arr) != n:
                raise ValueError(f"Fused.{name} must be 1-D of length {n}, got shape {arr.shape}")

    def __len__(self) -> int:
        return len(self.keys)


def _side(keys: NDArray[Any], scores: NDArray[Any], name: str) -> tuple[Keys, Scores]:
    """One side's (keys, scores), checked: 1-D, same length, integer keys, no duplicates, finite."""
    k = np.asarray(keys)
    s = np.asarray(scores, dtype=np.float64)
    if k.ndim != 1 or s.ndim != 1 or len(k) != len(s):
        raise ValueError(
            f"{name} keys and scores must be 1-D arrays of the same length, got {k.shape} and {s.shape}"
        )
    if k.size and k.dtype.kind not in "iu":
        raise ValueError(f"{name} keys must be integers, got dtype {k.dtype}")
    k = k.astype(np.int64)
    if len(np.unique(k)) != len(k):
        values, counts = np.unique(k, return_counts=True)
        raise ValueError(f"{name} keys repeat: {values[counts > 1][:5].tolist()}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} scores contain NaN or infinite values")
    return k, s


def _ranked(candidates: Keys, fused: Scores, sides: list[tuple[Keys, Scores]], k: int) -> Fused:
    """The top ``k`` of the (sorted) candidates by fused score (ties: smaller key), with raw side scores."""
    order = np.lexsort((candidates, -fused))[:k]  # the last key is primary: fused descending, then key
    raw = []
    for keys, scores in sides:
        full = np.full(len(candidates), np.nan)
        full[np.searchsorted(candidates, keys)] = scores
        raw.append(full[order])
    return Fused(keys=candidates[order], scores=fused[order], dense=raw[0], lexical=raw[1])


def convex_fusion(
    dense_keys: NDArray[Any],
    dense_scores: NDArray[Any],
    lexical_keys: NDArray[Any],
    lexical_scores: NDArray[Any],
    *,
    alpha: float,
    k: int,
    normalization: str | ScoreNormalization = "minmax",
) -> Fused:
    """``alpha * dense + (1 - alpha) * lexical`` on each side's normalised scores; the top ``k``.

    Candidates are the union of both lists; one missing from a side gets that side's floor (the
    smallest normalised score of its list: 0 for min-max; 0 for an empty side).
    """
    a, k = check_alpha(alpha), _check_k(k)
    norm = ScoreNormalization.parse(normalization)
    dense = _side(dense_keys, dense_scores, "dense")
    lexical = _side(lexical_keys, lexical_scores, "lexical")
    candidates = np.union1d(dense[0], lexical[0]).astype(np.int64)  # sorted ascending
    sides = []
    for keys, scores in (dense, lexical):
        normed = normalize_scores(scores, norm)
        full = np.full(len(candidates), normed.min() if normed.size else 0.0)
        full[np.searchsorted(candidates, keys)] = normed
        sides.append(full)
    fused = a * sides[0] + (1.0 - a) * sides[1]
    return _ranked(candidates, fused, [dense, lexical], k)


def _rrf_contribution(scores: Scores, rank_constant: float) -> Scores:
    """1 / (rank_constant + rank) for each entry, ranked by score descending (ties: the order given)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return 1.0 / (rank_constant + ranks)


def reciprocal_rank_fusion(
    dense_keys: NDArray[Any],
    dense_scores: NDArray[Any],
    lexical_keys: NDArray[Any],
    lexical_scores: NDArray[Any],
    *,
    k: int,
    rank_constant: float = RRF_K,
) -> Fused:
    """``sum over sides of 1 / (rank_constant + rank)`` (rank from 1, each side by its own scores)."""
    k = _check_k(k)
    if (
        isinstance(rank_constant, bool)
        or not isinstance(rank_constant, Real)
        or not math.isfinite(float(rank_constant))
        or rank_constant < 0
    ):
        raise ValueError(f"rank_constant must be a finite number >= 0, got {rank_constant!r}")
    dense = _side(dense_keys, dense_scores, "dense")
    lexical = _side(lexical_keys, lexical_scores, "lexical")
    candidates = np.union1d(dense[0], lexical[0]).astype(np.int64)
    fused = np.zeros(len(candidates))
    for keys, scores in (dense, lexical):
        fused[np.searchsorted(candidates, keys)] += _rrf_contribution(scores, float(rank_constant))
    return _ranked(candidates, fused, [dense, lexical], k)
