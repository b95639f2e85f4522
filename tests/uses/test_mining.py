"""paraphrase_mining against sentence-transformers' util.paraphrase_mining."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from biencoder.uses import paraphrase_mining

st_util = pytest.importorskip("sentence_transformers.util")
torch = pytest.importorskip("torch")


def _reference(emb: np.ndarray, **kw: int) -> list[tuple[float, int, int]]:
    pairs = st_util.paraphrase_mining_embeddings(torch.from_numpy(emb), **kw)
    return [(float(s), int(i), int(j)) for s, i, j in pairs]


def _assert_same(ours: list[tuple[float, int, int]], ref: list[tuple[float, int, int]]) -> None:
    assert len(ours) == len(ref)
    np.testing.assert_allclose([s for s, _, _ in ours], [s for s, _, _ in ref], atol=1e-5)
    # the same pairs, except where scores tie (duplicates, the cut-off): then an equal-scored swap
    ref_scores = {(i, j): s for s, i, j in ref}
    ours_pairs = {(i, j) for _, i, j in ours}
    unmatched = [s for s, i, j in ref if (i, j) not in ours_pairs]
    for s, i, j in ours:
        assert i < j
        if (i, j) in ref_scores:
            assert abs(ref_scores[(i, j)] - s) < 1e-5
        else:
            assert any(abs(u - s) < 1e-5 for u in unmatched), (s, i, j)
    assert all(a[0] >= b[0] for a, b in itertools.pairwise(ours))


@pytest.mark.parametrize(
    ("n", "dim", "kw"),
    [
        (60, 16, {"top_k": 5, "max_pairs": 1000}),
        (60, 16, {"top_k": 5, "max_pairs": 40}),  # the cap bites
        (50, 8, {"top_k": 100, "max_pairs": 10_000}),  # top_k beyond n: every pair
        (97, 12, {"top_k": 3, "max_pairs": 50, "query_chunk_size": 7, "corpus_chunk_size": 11}),
    ],
)
def test_matches_sentence_transformers_on_random_embeddings(n: int, dim: int, kw: dict[str, int]) -> None:
    emb = np.random.default_rng(n + dim).standard_normal((n, dim)).astype(np.float32)
    ref = _reference(emb, **kw)
    ours = paraphrase_mining(emb, **kw)
    _assert_same(ours, ref)


def test_chunk_sizes_do_not_change_the_result() -> None:
    emb = np.random.default_rng(3).standard_normal((80, 10)).astype(np.float32)
    full = paraphrase_mining(emb, top_k=4, max_pairs=60)
    chunked = paraphrase_mining(emb, top_k=4, max_pairs=60, query_chunk_size=9, corpus_chunk_size=13)
    assert [(i, j) for _, i, j in full] == [(i, j) for _, i, j in chunked]
    np.testing.assert_allclose([s for s, _, _ in full], [s for s, _, _ in chunked], atol=1e-6)


def test_duplicates_are_found_even_when_self_is_not_first() -> None:
    rng = np.random.default_rng(4)
    base = rng.standard_normal((20, 6)).astype(np.float32)
    emb = np.concatenate([base, base[:5]])  # rows 20..24 duplicate rows 0..4
    pairs = paraphrase_mining(emb, top_k=1, max_pairs=100)
    top5 = {(i, j) for _, i, j in pairs[:5]}
    assert top5 == {(k, 20 + k) for k in range(5)}
    _assert_same(pairs, _reference(emb, top_k=1, max_pairs=100))


def test_with_an_encoder_matches_reference_on_tiny_model(tiny_model_dir: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    from biencoder import SentenceEncoder

    texts = [
        f"the {a} {b} is {c}"
        for a in ("cat", "dog", "fish")
        for b in ("big", "small")
        for c in ("red", "blue")
    ]
    ours = paraphrase_mining(SentenceEncoder.load(tiny_model_dir, device="cpu"), texts, top_k=3, max_pairs=20)
    ref_model = st.SentenceTransformer(str(tiny_model_dir), device="cpu")
    ref = [
        (float(s), int(i), int(j))
        for s, i, j in st_util.paraphrase_mining(ref_model, texts, top_k=3, max_pairs=20)
    ]
    _assert_same(ours, ref)


def test_small_and_bad_inputs() -> None:
    assert paraphrase_mining(np.zeros((1, 4), dtype=np.float32)) == []
    assert paraphrase_mining(np.zeros((0, 4), dtype=np.float32)) == []
    emb = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="top_k"):
        paraphrase_mining(emb, top_k=0)
    with pytest.raises(ValueError, match="max_pairs"):
        paraphrase_mining(emb, max_pairs=-1)
    with pytest.raises(ValueError, match="2 texts but 3 embeddings"):
        paraphrase_mining(emb, ["a", "b"])
    with pytest.raises(ValueError, match="unknown similarity"):
        paraphrase_mining(emb, similarity="hamming")
    with pytest.raises(ValueError, match="NaN"):
        paraphrase_mining(np.full((3, 2), np.nan, dtype=np.float32))


def test_a_row_whose_top_list_misses_itself_keeps_only_top_k() -> None:
    # three identical rows: with top_k=1, ties go to the lower index, so row 2's list is [0, 1]
    # (itself absent); it must keep one neighbour, not two.
    emb = np.concatenate([np.ones((3, 4)), np.random.default_rng(5).standard_normal((10, 4))]).astype(
        np.float32
    )
    emb[3:, 0] = -10.0  # far from the triple
    pairs = paraphrase_mining(emb, top_k=1, max_pairs=100)
    triple = [(i, j) for _, i, j in pairs if j < 3]
    assert triple == [(0, 1), (0, 2)]


@pytest.mark.slow
def test_real_model_on_quora_questions(data_dir: Path, minilm: object, st_minilm: object) -> None:
    lines = (data_dir / "quora-duplicates" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:151]]
    texts = list(dict.fromkeys(t for r in rows for t in r[:2]))
    ours = paraphrase_mining(minilm, texts, top_k=5, max_pairs=200)
    ref = [
        (float(s), int(i), int(j))
        for s, i, j in st_util.paraphrase_mining(st_minilm, texts, top_k=5, max_pairs=200)
    ]
    _assert_same(ours, ref)
