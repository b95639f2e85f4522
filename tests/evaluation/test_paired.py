"""The paired randomisation test against scipy's permutation_test, and the win / tie / loss counts."""

from __future__ import annotations

import numpy as np
import pytest

from biencoder.evaluation.paired import compare, randomisation_p_value


def _scipy(d: np.ndarray, resamples: int) -> tuple[float, float]:
    """scipy's two-sided p-value, and the share of its null distribution with |mean| >= |observed|."""
    stats = pytest.importorskip("scipy.stats")
    result = stats.permutation_test(
        (d, np.zeros_like(d)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=resamples,
        alternative="two-sided",
        random_state=0,
    )
    extreme = np.abs(result.null_distribution) >= abs(result.statistic) * (1 - 1e-14)
    return float(result.pvalue), float(np.mean(extreme))


@pytest.mark.parametrize("n", [2, 5, 12, 16])
def test_exact_p_value_equals_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    d = np.round(rng.normal(0.05, 0.2, size=n), 3)  # rounded: ties among |differences| too
    d[0] = 0.0 if n > 3 else d[0]
    # exact in both (2**n assignments); the null is symmetric, so the two definitions agree
    assert randomisation_p_value(d) == pytest.approx(_scipy(d, 10**6)[0], abs=1e-12)


def test_sampled_p_value_is_close_to_scipy() -> None:
    rng = np.random.default_rng(7)
    for shift in (0.0, 0.02):  # 2**300 assignments: both sample
        d = rng.normal(shift, 0.15, size=300)
        ours, (_, theirs) = randomisation_p_value(d, 50_000), _scipy(d, 50_000)
        assert ours == pytest.approx(theirs, abs=0.006)  # two samples of the same tail, SE < 0.0023
    assert randomisation_p_value(np.array([0.1])) == 1.0


def test_compare_counts_and_checks_queries() -> None:
    a = {"q1": 0.5, "q2": 0.2, "q3": 1.0, "q4": 0.0}
    b = {"q1": 0.7, "q2": 0.2, "q3": 0.9, "q4": 0.3}
    r = compare(a, b)
    assert (r.queries, r.wins, r.ties, r.losses) == (4, 2, 1, 1)
    assert r.mean_difference == pytest.approx(0.1)
    # 16 sign assignments of (0.2, 0, -0.1, 0.3): |mean| >= 0.1 for 8 of them
    assert r.p_value == pytest.approx(0.5)
    assert compare(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="different queries"):
        compare(a, {"q1": 0.1})
    with pytest.raises(ValueError, match="non-empty"):
        randomisation_p_value(np.array([]))
