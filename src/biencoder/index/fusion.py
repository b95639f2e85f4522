"""Fusing a dense and a lexical result list: convex combination of normalised scores, or reciprocal rank.

Pure numpy, no I/O. Each side hands over its candidates as ``keys`` (int64, e.g. row positions)
and ``scores`` (higher is better), best first or in any order. The fused list is ranked by the
fused score, ties broken by the smaller key, so the same inputs always give the same order.

- :func:`convex_fusion`: each side's scores are normalised on their own (min-max or z-score),
  a candidate one side did not return gets that side's floor (the lowest normalised score of
  its list; 0 when the list is empty), and ``fused = alpha * dense + (1 - alpha) * lexical``.
- :func:`reciprocal_rank_fusion`: ``sum over sides of 1 / (rank_constant + rank)``, ranks from 1.

Min-max and z-score stretch each list over its own range, whatever its quality: BM25's best hit
always scores 1, even when it matches one common word. ``calibrated`` keeps each side on an
absolute scale instead: the dense score as the model gives it (a cosine), the BM25 score divided
by the query's BM25 scale (the sum of its terms' idf: about what a passage of average length
holding each term once scores), so a weak lexical match weighs little. With ``adaptive`` the
weight moves per query towards the side whose best hit stands further above its own candidates
(:func:`adaptive_alpha`). The untuned default (calibrated, adaptive, alpha 0.7) was chosen on
SciFact train and WikiQA dev, never on a test split; docs/search.md has the figures.
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

DEFAULT_ALPHA: float = 0.7  # weight of the dense side when untuned; chosen by measurement, docs/search.md
ADAPTIVE_SHIFT = 0.3  # how far adaptive_alpha may move alpha either way
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
    CALIBRATED = "calibrated"  # dense as given; lexical / the query's BM25 scale (needs lexical_scale)

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


def normalize_scores(scores: NDArray[Any], method: str | ScoreNormalization, scale: float = 1.0) -> Scores:
    """Scores mapped onto a common scale: min-max (all equal: 1.0), z-score (std 0: 0.0), or
    calibrated (divided by ``scale``)."""
    norm = ScoreNormalization.parse(method)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-D array, got shape {s.shape}")
    if s.size == 0:
        return s.copy()
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if norm is ScoreNormalization.CALIBRATED:
        return s / scale
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


def top_z(scores: NDArray[Any]) -> float:
    """How far a list's best score stands above the list: (max - mean) / std; 0 for < 2 or equal scores."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 2 or s.std() == 0:
        return 0.0
    return float((s.max() - s.mean()) / s.std())


def adaptive_alpha(
    alpha: float, dense_scores: NDArray[Any], lexical_scores: NDArray[Any], shift: float = ADAPTIVE_SHIFT
) -> float:
    """``alpha`` moved by up to ``shift`` towards the side whose best hit stands out more.

    ``alpha + shift * (z_dense - z_lexical) / (z_dense + z_lexical)``, clipped to [0, 1], with
    ``z`` = :func:`top_z` of each side's own candidate scores: a side whose top hit is barely
    above the rest of its list is unsure of it, and weighs less for that query.
    """
    a = check_alpha(alpha)
    zd, zl = top_z(dense_scores), top_z(lexical_scores)
    if zd + zl <= 0:
        return a
    return float(min(1.0, max(0.0, a + shift * (zd - zl) / (zd + zl))))


def convex_fusion(
    dense_keys: NDArray[Any],
    dense_scores: NDArray[Any],
    lexical_keys: NDArray[Any],
    lexical_scores: NDArray[Any],
    *,
    alpha: float,
    k: int,
    normalization: str | ScoreNormalization = "minmax",
    lexical_scale: float | None = None,
    adaptive: bool = False,
) -> Fused:
    """``alpha * dense + (1 - alpha) * lexical`` on each side's normalised scores; the top ``k``.

    Candidates are the union of both lists; one missing from a side gets that side's floor (the
    smallest normalised score of its list: 0 for min-max; 0 for an empty side; for calibrated
    lexical scores 0, BM25's score for a passage that matches no query term). ``calibrated``
    needs ``lexical_scale`` (> 0), the query's BM25 scale. ``adaptive``: alpha per
    :func:`adaptive_alpha` of the two raw lists.
    """
    a, k = check_alpha(alpha), _check_k(k)
    norm = ScoreNormalization.parse(normalization)
    dense = _side(dense_keys, dense_scores, "dense")
    lexical = _side(lexical_keys, lexical_scores, "lexical")
    scale = 1.0
    if norm is ScoreNormalization.CALIBRATED:
        if (
            isinstance(lexical_scale, bool)
            or not isinstance(lexical_scale, Real)
            or not math.isfinite(float(lexical_scale))
            or lexical_scale <= 0
        ):
            raise ValueError(f"calibrated fusion needs lexical_scale > 0, got {lexical_scale!r}")
        scale = float(lexical_scale)
    if adaptive:
        a = adaptive_alpha(a, dense[1], lexical[1])
    candidates = np.union1d(dense[0], lexical[0]).astype(np.int64)  # sorted ascending
    sides = []
    for name, (keys, scores) in (("dense", dense), ("lexical", lexical)):
        normed = normalize_scores(scores, norm, scale if name == "lexical" else 1.0)
        calibrated_lexical = norm is ScoreNormalization.CALIBRATED and name == "lexical"
        floor = 0.0 if calibrated_lexical or not normed.size else normed.min()
        full = np.full(len(candidates), floor)
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
