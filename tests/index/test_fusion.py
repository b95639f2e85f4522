"""Fusion of a dense and a lexical list: equal to a plain-Python reference (dicts and loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biencoder.index.fusion import (
    RRF_K,
    Fusion,
    ScoreNormalization,
    SearchMode,
    adaptive_alpha,
    check_alpha,
    convex_fusion,
    normalize_scores,
    reciprocal_rank_fusion,
)

Side = dict[int, float]  # key -> score, in the order the side gave them


# --- the reference: plain Python ---------------------------------------------------------------
def ref_normalize(scores: list[float], method: str) -> list[float]:
    if not scores:
        return []
    if method == "minmax":
        low, high = min(scores), max(scores)
        return [1.0] * len(scores) if high == low else [(s - low) / (high - low) for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [0.0] * len(scores) if std == 0 else [(s - mean) / std for s in scores]


def ref_convex(dense: Side, lexical: Side, alpha: float, k: int, method: str = "minmax") -> list[tuple]:
    """[(key, fused, dense raw or None, lexical raw or None)], best first, ties by smaller key."""
    normed = []
    for side in (dense, lexical):
        values = ref_normalize(list(side.values()), method)
        normed.append((dict(zip(side, values, strict=True)), min(values) if values else 0.0))
    (dn, dfloor), (ln, lfloor) = normed
    fused = {}
    for key in set(dense) | set(lexical):
        fused[key] = alpha * dn.get(key, dfloor) + (1 - alpha) * ln.get(key, lfloor)
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [(key, score, dense.get(key), lexical.get(key)) for key, score in ranked]


def ref_rrf(dense: Side, lexical: Side, k: int, c: float = RRF_K) -> list[tuple]:
    fused: dict[int, float] = {}
    for side in (dense, lexical):
        items = list(side.items())
        order = sorted(range(len(items)), key=lambda i: (-items[i][1], i))  # ties: the order given
        for rank, i in enumerate(order, start=1):
            key = items[i][0]
            fused[key] = fused.get(key, 0.0) + 1.0 / (c + rank)
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [(key, score, dense.get(key), lexical.get(key)) for key, score in ranked]


def arrays(side: Side) -> tuple[np.ndarray, np.ndarray]:
    return np.array(list(side), dtype=np.int64), np.array(list(side.values()), dtype=np.float64)


def rows(fused) -> list[tuple]:  # type: ignore[no-untyped-def]
    def raw(v: float) -> float | None:
        return None if np.isnan(v) else float(v)

    return [
        (int(key), float(s), raw(d), raw(lx))
        for key, s, d, lx in zip(fused.keys, fused.scores, fused.dense, fused.lexical, strict=True)
    ]


def assert_same(ours: list[tuple], ref: list[tuple], exact_order: bool = True) -> None:
    if exact_order:
        assert [r[0] for r in ours] == [r[0] for r in ref]
    else:
        assert {r[0] for r in ours} == {r[0] for r in ref}
    ours_by, ref_by = {r[0]: r for r in ours}, {r[0]: r for r in ref}
    for key, (_, score, d, lx) in ref_by.items():
        assert ours_by[key][1] == pytest.approx(score, rel=1e-12, abs=1e-12)
        assert ours_by[key][2:] == (d, lx)


# Hand-made lists: a candidate seen by one side only, ties within and across sides.
DENSE: Side = {10: 0.9, 11: 0.8, 12: 0.8, 13: 0.5, 14: 0.1}
LEXICAL: Side = {12: 14.0, 20: 14.0, 13: 9.0, 21: 3.0, 10: 1.0}
CASES = [
    ("mixed", DENSE, LEXICAL),
    ("one side each", {1: 0.3, 2: 0.2}, {3: 5.0, 4: 1.0}),
    ("all equal", {5: 0.4, 3: 0.4, 9: 0.4}, {3: 2.0, 7: 2.0}),
    ("empty lexical", DENSE, {}),
    ("empty dense", {}, LEXICAL),
    ("both empty", {}, {}),
    ("fused tie", {1: 1.0, 2: 0.0}, {2: 1.0, 1: 0.0}),  # alpha 0.5: both 0.5, key 1 first
]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize(("name", "dense", "lexical"), CASES, ids=[c[0] for c in CASES])
def test_convex_minmax_equals_reference(name: str, dense: Side, lexical: Side, alpha: float) -> None:
    for k in (1, 3, 100):
        ours = convex_fusion(*arrays(dense), *arrays(lexical), alpha=alpha, k=k)
        assert_same(rows(ours), ref_convex(dense, lexical, alpha, k))


@pytest.mark.parametrize(("name", "dense", "lexical"), CASES, ids=[c[0] for c in CASES])
def test_convex_zscore_equals_reference(name: str, dense: Side, lexical: Side) -> None:
    # numpy's mean and std sum in another order than the loop: equal to rounding, so fused
    # scores may differ in the last bits and exact ties may break either way: compare as sets.
    ours = convex_fusion(*arrays(dense), *arrays(lexical), alpha=0.4, k=100, normalization="zscore")
    assert_same(rows(ours), ref_convex(dense, lexical, 0.4, 100, "zscore"), exact_order=False)


@pytest.mark.parametrize(("name", "dense", "lexical"), CASES, ids=[c[0] for c in CASES])
def test_rrf_equals_reference(name: str, dense: Side, lexical: Side) -> None:
    for k, c in ((2, 60), (100, 60), (100, 1)):
        ours = reciprocal_rank_fusion(*arrays(dense), *arrays(lexical), k=k, rank_constant=c)
        assert_same(rows(ours), ref_rrf(dense, lexical, k, c))


@pytest.mark.parametrize("seed", range(20))
def test_random_lists_equal_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = rng.permutation(60)
    dense = {int(key): float(s) for key, s in zip(keys[:30], rng.integers(0, 5, 30) / 4, strict=True)}
    lexical = {int(key): float(s) for key, s in zip(keys[20:45], rng.integers(1, 9, 25) * 1.5, strict=True)}
    alpha = float(rng.choice([0.0, 0.25, 0.7, 1.0]))
    ours = convex_fusion(*arrays(dense), *arrays(lexical), alpha=alpha, k=25)
    assert_same(rows(ours), ref_convex(dense, lexical, alpha, 25))
    ours = reciprocal_rank_fusion(*arrays(dense), *arrays(lexical), k=25)
    assert_same(rows(ours), ref_rrf(dense, lexical, 25))
    ours = convex_fusion(*arrays(dense), *arrays(lexical), alpha=alpha, k=60, normalization="zscore")
    assert_same(rows(ours), ref_convex(dense, lexical, alpha, 60, "zscore"), exact_order=False)


def test_missing_candidate_gets_the_side_floor() -> None:
    # z-score: a candidate the lexical side missed gets its lowest z-score, not 0
    fused = convex_fusion(np.array([1, 2]), np.array([1.0, 0.0]), np.array([2, 3]), np.array([3.0, 1.0]),
                          alpha=0.5, k=10, normalization="zscore")  # fmt: skip
    by_key = dict(zip(fused.keys.tolist(), fused.scores.tolist(), strict=True))
    assert by_key[1] == pytest.approx(0.5 * 1.0 + 0.5 * -1.0)
    assert by_key[3] == pytest.approx(0.5 * -1.0 + 0.5 * -1.0)


def test_normalize_scores() -> None:
    s = np.array([2.0, 4.0, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(normalize_scores(s, "minmax"), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(normalize_scores(s, "zscore"), (s - 3.0) / np.std([2.0, 4.0, 3.0]))
    np.testing.assert_array_equal(normalize_scores(np.full(4, 7.0), "minmax"), np.ones(4))
    np.testing.assert_array_equal(normalize_scores(np.full(4, 7.0), ScoreNormalization.ZSCORE), np.zeros(4))
    assert normalize_scores(np.zeros(0), "minmax").shape == (0,)
    assert normalize_scores(s, "minmax").dtype == np.float64
    with pytest.raises(ValueError, match="1-D"):
        normalize_scores(np.zeros((2, 2)), "minmax")
    with pytest.raises(ValueError, match="NaN"):
        normalize_scores(np.array([1.0, np.nan]), "minmax")


def test_check_alpha() -> None:
    assert check_alpha(0) == 0.0 and check_alpha(1) == 1.0 and check_alpha(np.float32(0.25)) == 0.25
    for bad in (-0.1, 1.5, float("nan"), True, "0.5", None, float("inf")):
        with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\], got " + repr(bad)[:4]):
            check_alpha(bad)


def test_modes_parse_once_with_the_valid_values() -> None:
    assert SearchMode.parse("Hybrid") is SearchMode.HYBRID
    assert Fusion.parse(Fusion.RRF) is Fusion.RRF
    assert ScoreNormalization.parse("ZSCORE") is ScoreNormalization.ZSCORE
    with pytest.raises(ValueError, match=r"unknown search mode 'x'; valid: dense, lexical, hybrid$"):
        SearchMode.parse("x")
    with pytest.raises(ValueError, match=r"unknown fusion 'sum'; valid: convex, rrf$"):
        Fusion.parse("sum")
    with pytest.raises(
        ValueError, match=r"unknown score normalization 'l2'; valid: minmax, zscore, calibrated$"
    ):
        ScoreNormalization.parse("l2")
    with pytest.raises(ValueError, match="unknown score normalization"):
        convex_fusion(np.array([1]), np.array([1.0]), np.array([1]), np.array([1.0]), alpha=0.5, k=1,
                      normalization="l2")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1, 2], [0.5], [], []), "dense keys and scores must be 1-D arrays of the same length"),
        (([], [], [1], [0.5, 0.2]), "lexical keys and scores must be 1-D arrays of the same length"),
        (([[1, 2]], [[0.5, 0.1]], [], []), "must be 1-D"),
        (([1, 1], [0.5, 0.2], [], []), r"dense keys repeat: \[1\]"),
        (([1.5], [0.5], [], []), "keys must be integers"),
        (([1], [np.nan], [], []), "NaN or infinite"),
    ],
)
def test_bad_lists(args: tuple, message: str) -> None:
    arrays_ = [np.asarray(a) for a in args]
    with pytest.raises(ValueError, match=message):
        convex_fusion(*arrays_, alpha=0.5, k=3)
    with pytest.raises(ValueError, match=message):
        reciprocal_rank_fusion(*arrays_, k=3)


def test_bad_k_alpha_rank_constant() -> None:
    one = (np.array([1]), np.array([1.0]), np.array([2]), np.array([1.0]))
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            convex_fusion(*one, alpha=0.5, k=k)  # type: ignore[arg-type]
    for alpha in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="alpha must be a number"):
            convex_fusion(*one, alpha=alpha, k=1)
    for c in (-1, float("nan"), True):
        with pytest.raises(ValueError, match="rank_constant must be a finite number >= 0"):
            reciprocal_rank_fusion(*one, k=1, rank_constant=c)


# --- calibrated scores and the adaptive weight ----------------------------------------------------
def ref_top_z(scores: list[float]) -> float:
    if len(scores) < 2:
        return 0.0
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return 0.0 if std == 0 else (max(scores) - mean) / std


def ref_calibrated(
    dense: Side, lexical: Side, alpha: float, k: int, scale: float, adaptive: bool
) -> list[tuple]:
    if adaptive:
        zd, zl = ref_top_z(list(dense.values())), ref_top_z(list(lexical.values()))
        if zd + zl > 0:
            alpha = min(1.0, max(0.0, alpha + 0.3 * (zd - zl) / (zd + zl)))
    dfloor = min(dense.values()) if dense else 0.0
    fused = {
        key: alpha * dense.get(key, dfloor) + (1 - alpha) * (lexical.get(key, 0.0) / scale)
        for key in set(dense) | set(lexical)
    }
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [(key, score, dense.get(key), lexical.get(key)) for key, score in ranked]


CALIBRATION_CASES = [
    ({1: 0.8, 2: 0.7, 3: 0.1}, {2: 9.0, 4: 3.0, 5: 0.5}, 6.0),  # overlap, one-sided on both sides
    ({1: 0.5, 2: 0.5, 3: 0.5}, {3: 2.0, 1: 2.0}, 4.0),  # ties on both sides
    ({7: 0.9, 3: 0.2}, {}, 1.0),  # no lexical hits
    ({1: 0.6, 2: 0.55, 3: 0.5, 4: 0.45}, {9: 30.0, 2: 1.0, 3: 1.0, 4: 1.0}, 10.0),  # lexical top stands out
]


@pytest.mark.parametrize(("dense", "lexical", "scale"), CALIBRATION_CASES)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("adaptive", [False, True])
def test_calibrated_fusion_equals_the_reference(
    dense: Side, lexical: Side, scale: float, alpha: float, adaptive: bool
) -> None:
    got = convex_fusion(
        *arrays(dense), *arrays(lexical), alpha=alpha, k=10, normalization="calibrated",
        lexical_scale=scale, adaptive=adaptive,
    )  # fmt: skip
    assert_same(rows(got), ref_calibrated(dense, lexical, alpha, 10, scale, adaptive))


def test_adaptive_alpha_moves_towards_the_side_that_stands_out() -> None:
    flat = np.array([1.0, 0.99, 0.98, 0.97])
    peaked = np.array([10.0, 1.0, 1.0, 1.0])
    assert adaptive_alpha(0.7, flat, peaked) < 0.7 < adaptive_alpha(0.7, peaked, flat)
    assert adaptive_alpha(0.7, peaked, flat) <= 1.0 and adaptive_alpha(0.5, flat, flat) == 0.5
    assert adaptive_alpha(0.9, np.array([1.0]), np.array([2.0])) == 0.9  # no spread: unchanged
    assert abs(adaptive_alpha(0.5, peaked, flat) - 0.5) <= 0.3 + 1e-12


@pytest.mark.parametrize("scale", [None, 0.0, -1.0, float("nan"), True])
def test_calibrated_needs_a_positive_lexical_scale(scale: object) -> None:
    with pytest.raises(ValueError, match="lexical_scale > 0"):
        convex_fusion(np.array([1]), np.array([0.5]), np.array([1]), np.array([2.0]), alpha=0.5, k=1,
                      normalization="calibrated", lexical_scale=scale)  # type: ignore[arg-type]  # fmt: skip
