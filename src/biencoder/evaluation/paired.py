"""Paired comparison of two models on the same queries: wins, ties, losses and a randomisation test.

The test is the paired (sign-flip) randomisation test of IR evaluation (Smucker, Allan and
Carterette 2007): under the null hypothesis each query's difference is as likely to have
either sign, so the p-value is the share of random sign assignments whose mean difference is
at least as far from zero as the observed one (two-sided). With ``n`` queries up to 20 every one
of the 2**n assignments is enumerated; otherwise ``resamples`` are drawn, and the observed
assignment is counted among them (p >= 1 / (resamples + 1)), as scipy's ``permutation_test``
does, against which it is tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

EXACT_UP_TO = 20


@dataclass(frozen=True)
class PairedResult:
    queries: int
    wins: int  # queries where b scores higher than a
    ties: int
    losses: int
    mean_a: float
    mean_b: float
    p_value: float

    @property
    def mean_difference(self) -> float:
        return self.mean_b - self.mean_a

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mean_difference": self.mean_difference}


def randomisation_p_value(differences: np.ndarray, resamples: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip test of mean(differences) == 0."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"differences must be a non-empty vector, got shape {d.shape}")
    if resamples <= 0:
        raise ValueError(f"resamples must be positive, got {resamples}")
    observed = abs(d.mean())
    # a relative tolerance, as scipy's, so that float noise in equal means counts as "as extreme"
    tolerance = observed * 1e-14 if observed else 0.0
    if d.size <= EXACT_UP_TO:
        signs = np.array(list(product((1.0, -1.0), repeat=d.size)))  # [2**n, n]
        means = np.abs(signs @ d / d.size)
        return float(np.mean(means >= observed - tolerance))
    rng = np.random.default_rng(seed)
    hits, done, chunk = 0, 0, 10_000
    while done < resamples:
        m = min(chunk, resamples - done)
        signs = rng.choice((1.0, -1.0), size=(m, d.size))
        hits += int(np.sum(np.abs(signs @ d / d.size) >= observed - tolerance))
        done += m
    return (hits + 1) / (resamples + 1)


def compare(
    a: Mapping[str, float], b: Mapping[str, float], resamples: int = 100_000, seed: int = 0
) -> PairedResult:
    """b against a on the queries both scored (the same set is required)."""
    if set(a) != set(b):
        raise ValueError(f"the two score sets cover different queries ({len(a)} vs {len(b)})")
    if not a:
        raise ValueError("no queries to compare")
    ids = sorted(a)
    x, y = np.array([a[q] for q in ids]), np.array([b[q] for q in ids])
    diff = y - x
    return PairedResult(
        queries=len(ids),
        wins=int(np.sum(diff > 0)),
        ties=int(np.sum(diff == 0)),
        losses=int(np.sum(diff < 0)),
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        p_value=randomisation_p_value(diff, resamples, seed),
    )
