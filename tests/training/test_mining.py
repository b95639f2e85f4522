"""Hard-negative mining against sentence-transformers' mine_hard_negatives on SciFact train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from biencoder.training.mining import MiningConfig, mine_hard_negatives

pytestmark = [pytest.mark.slow, pytest.mark.reference]


@pytest.fixture(scope="module")
def scifact_pairs(data_dir: Path) -> tuple[list[str], list[str], list[str]]:
    from biencoder.data.beir import load_beir
    from biencoder.data.sources import read_beir_pairs

    pairs = read_beir_pairs(data_dir / "scifact", "train")
    corpus = load_beir(data_dir / "scifact", "train").corpus
    extra = list(corpus.values())[:150]  # a slice of the corpus besides the positives: a fast test
    return pairs.anchors[:150], pairs.positives[:150], extra


@pytest.fixture(scope="module")
def st_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """sentence-transformers' own embedding cache: the three option sets encode the texts once."""
    return str(tmp_path_factory.mktemp("st-mining-cache"))


@pytest.fixture(scope="module")
def memo_minilm(minilm: Any) -> Any:
    """Our encoder behind a memo: the three option sets encode the texts once (mining is what differs)."""
    from biencoder.memo import MemoEncoder

    return MemoEncoder(minilm)


def _reference(
    st_minilm: Any, anchors: list[str], positives: list[str], corpus: list[str] | None, cache: str, **kw: Any
) -> list[tuple[str, ...]]:
    datasets = pytest.importorskip("datasets")
    util = pytest.importorskip("sentence_transformers.util")
    ds = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    out = util.mine_hard_negatives(
        ds, st_minilm, corpus=corpus, verbose=False, batch_size=32, cache_folder=cache, **kw
    )
    return [tuple(row.values()) for row in out]


@pytest.mark.parametrize(
    "options",
    [
        {"output_format": "n-tuple"},
        {"output_format": "triplet", "range_min": 2, "num_negatives": 4, "absolute_margin": 0.05},
        {"output_format": "n-tuple", "relative_margin": 0.05, "max_score": 0.8, "min_score": 0.2},
    ],
)
def test_negatives_equal_sentence_transformers(
    memo_minilm, st_minilm, st_cache, scifact_pairs, options
) -> None:  # type: ignore[no-untyped-def]
    anchors, positives, extra = scifact_pairs
    expected = _reference(st_minilm, anchors, positives, extra, st_cache, **options)
    ours = mine_hard_negatives(memo_minilm, anchors, positives, extra, MiningConfig(**options))
    assert len(ours.rows) == len(expected)
    same = sum(a == b for a, b in zip(ours.rows, expected, strict=True))
    print(f"{options}: {same} of {len(expected)} rows equal")
    assert same / len(expected) >= 0.99, same / len(expected)  # near-ties may swap two negatives
    assert {r[:2] for r in ours.rows} == {r[:2] for r in expected}
    positives_of: dict[str, set[str]] = {}
    for a, p in zip(anchors, positives, strict=True):
        positives_of.setdefault(a, set()).add(p)
    for row in ours.rows:
        assert not set(row[2:]) & positives_of[row[0]]  # never a known positive
        assert row[0] not in row[2:]
