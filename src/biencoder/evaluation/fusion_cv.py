"""Choosing hybrid search's dense weight by k-fold cross-validation over queries (pure numpy).

The input is a score matrix [queries, alphas]: each query's metric (nDCG@10 ...) when convex
fusion weighs the dense side by each alpha of the grid. The queries are dealt into ``folds``
folds at random (``seed``; sizes differ by at most one). For each fold, the alpha with the best
mean over the *other* folds is picked and scored on the held-out fold, so every query is scored
by an alpha chosen without it; ``cv_score`` is the mean of those held-out scores over all
queries (the fold means weighed by fold size). The final ``alpha`` is the best on all queries.

Ties: alphas whose mean is within ``TIE_TOLERANCE`` of the best count as equal (means of the same
numbers summed in another order differ by rounding), and among them the one closest to 0.5 is
picked, the smaller of two equally close. A flat stretch of the curve says the data cannot tell
those weights apart, and the even mix is the least extreme bet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from biencoder.index.fusion import check_alpha

logger = logging.getLogger(__name__)

TIE_TOLERANCE = 1e-12
TIE_CENTRE = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class FoldPick:
    """One fold: the alpha picked on the other folds (and its mean there), its held-out mean."""

    fold: int  # from 1
    alpha: float
    train_score: float
    train_queries: int
    test_score: float
    test_queries: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CrossValidation:
    """The folds' picks, the cross-validated score, and the final alpha (best on all queries)."""

    folds: tuple[FoldPick, ...]
    cv_score: float
    alpha: float
    grid: tuple[float, ...]
    means: tuple[float, ...]  # each alpha's mean over all queries


def check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """The grid as alphas in [0, 1], non-empty and without repeats (order kept)."""
    alphas = tuple(check_alpha(a) for a in grid)
    if not alphas:
        raise ValueError("the alpha grid is empty")
    if len(set(alphas)) != len(alphas):
        raise ValueError(f"the alpha grid repeats a value: {list(alphas)}")
    return alphas


def best_alpha(means: NDArray[np.float64], grid: Sequence[float]) -> int:
    """The grid position of the best mean; ties (within ``TIE_TOLERANCE``) go to the alpha closest
    to 0.5, then to the smaller alpha."""
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 1 or len(m) != len(grid) or not len(m):
        raise ValueError(f"means must be a 1-D array of one value per alpha ({len(grid)}), got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("means contain NaN or infinite values")
    tied = [int(i) for i in np.flatnonzero(m >= m.max() - TIE_TOLERANCE)]
    return min(tied, key=lambda i: (abs(grid[i] - TIE_CENTRE), grid[i]))


def fold_of_queries(n_queries: int, folds: int, seed: int) -> NDArray[np.int64]:
    """Each query's fold (0 .. folds-1): a seeded shuffle dealt round, so sizes differ by at most one."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if n_queries < folds:
        raise ValueError(f"{folds} folds need at least {folds} queries, got {n_queries}")
    order = np.random.default_rng(seed).permutation(n_queries)
    fold = np.empty(n_queries, dtype=np.int64)
    fold[order] = np.arange(n_queries) % folds
    return fold


def cross_validate(
    scores: NDArray[np.float64], grid: Sequence[float], *, folds: int = 5, seed: int = 42
) -> CrossValidation:
    """k-fold cross-validation of the alpha pick on ``scores`` [queries, alphas]; see the module."""
    alphas = check_grid(grid)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(alphas):
        raise ValueError(f"scores must be [queries, {len(alphas)} alphas], got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    fold = fold_of_queries(s.shape[0], folds, seed)
    picks = []
    held_out = np.empty(s.shape[0], dtype=np.float64)
    for f in range(folds):
        test = fold == f
        train_means = s[~test].mean(axis=0)
        pick = best_alpha(train_means, alphas)
        held_out[test] = s[test, pick]
        picks.append(
            FoldPick(
                fold=f + 1,
                alpha=alphas[pick],
                train_score=float(train_means[pick]),
                train_queries=int((~test).sum()),
                test_score=float(s[test, pick].mean()),
                test_queries=int(test.sum()),
            )
        )
    means = s.mean(axis=0)
    final = best_alpha(means, alphas)
    return CrossValidation(
        folds=tuple(picks),
        cv_score=float(held_out.mean()),
        alpha=alphas[final],
        grid=alphas,
        means=tuple(float(m) for m in means),
    )


def parse_grid(text: str) -> tuple[float, ...]:
    """``"0,0.25,0.5"``, or an arithmetic run written ``"0,0.1,...,1"`` (step from the first two)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if "..." in parts:
            if len(parts) != 4 or parts[2] != "...":
                raise ValueError("write a run as 'first,second,...,last'")
            first, second, last = float(parts[0]), float(parts[1]), float(parts[3])
            step = second - first
            if step <= 0 or last < first:
                raise ValueError("a run must increase")
            count = round((last - first) / step) + 1
            values = [round(first + i * step, 10) for i in range(count)]
            if abs(values[-1] - last) > 1e-9:
                raise ValueError(f"{last} is not on the run from {first} by {step:g}")
        else:
            values = [float(p) for p in parts]
        return check_grid(values)
    except ValueError as exc:
        raise ValueError(f"bad alpha grid {text!r}: {exc}") from None
