"""Our batch order against SentenceTransformerTrainer's, for one dataset and for round-robin over two."""

from __future__ import annotations

from pathlib import Path

import pytest

from biencoder.data.sampling import batches_per_epoch, epoch_batches
from biencoder.encoder import SentenceEncoder
from tests.tiny import WORDS


def _texts(n: int, k: int, tag: str = "") -> list[str]:
    return [
        " ".join(WORDS[(i * 7 + j * k) % len(WORDS)] for j in range(1 + i % 5)) + f" {i}{tag}"
        for i in range(n)
    ]


@pytest.mark.slow
@pytest.mark.reference
def test_order_matches_sentence_transformers_trainer(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    from tests.training.st_reference import st_training_order

    sets = [
        {"anchor": _texts(50, 3), "positive": _texts(50, 5)},
        {"anchor": _texts(37, 11, " x"), "positive": _texts(37, 2)},
    ]
    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    for datasets in (sets[:1], sets):
        seen = st_training_order(tiny_model_dir, datasets, 8, 3, 42, tmp_path / "st")
        sizes = [len(d["anchor"]) for d in datasets]
        ids = [encoder.transformer.tokenize_unpadded(d["anchor"]).ids for d in datasets]
        ours = [
            [tuple(ids[b.dataset][r]) for r in b.rows]
            for e in range(3)
            for b in epoch_batches(sizes, 8, 42, e)
        ]
        assert seen == ours
        assert len(ours) == 3 * batches_per_epoch(sizes, 8)


@pytest.mark.slow
@pytest.mark.reference
def test_proportional_order_matches_sentence_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    from tests.training.st_reference import st_training_order

    sets = [
        {"anchor": _texts(50, 3), "positive": _texts(50, 5)},
        {"anchor": _texts(21, 11, " x"), "positive": _texts(21, 2)},
        {"anchor": _texts(9, 4, " y"), "positive": _texts(9, 6)},
    ]
    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    seen = st_training_order(tiny_model_dir, sets, 8, 3, 42, tmp_path / "st", "proportional")
    sizes = [len(d["anchor"]) for d in sets]
    ids = [encoder.transformer.tokenize_unpadded(d["anchor"]).ids for d in sets]
    ours = [
        [tuple(ids[b.dataset][r]) for r in b.rows]
        for e in range(3)
        for b in epoch_batches(sizes, 8, 42, e, multi_dataset_sampler="proportional")
    ]
    assert seen == ours
    assert len(ours) == 3 * batches_per_epoch(sizes, 8, "proportional") == 3 * (7 + 3 + 2)


def test_proportional_uses_every_row_once_per_epoch() -> None:
    batches = epoch_batches([10, 30, 3], 4, 7, 0, multi_dataset_sampler="proportional")
    assert sorted(b.dataset for b in batches) == [0] * 3 + [1] * 8 + [2]
    for d, n in enumerate([10, 30, 3]):
        assert sorted(r for b in batches if b.dataset == d for r in b.rows) == list(range(n))
    again = epoch_batches([10, 30, 3], 4, 7, 0, multi_dataset_sampler="proportional")
    assert again == batches  # reproducible for a seed
    assert epoch_batches([10, 30, 3], 4, 7, 1, multi_dataset_sampler="proportional") != batches
    with pytest.raises(ValueError, match="multi_dataset_sampler"):
        epoch_batches([10, 30], 4, 7, 0, multi_dataset_sampler="random")


def test_round_robin_stops_at_the_shortest() -> None:
    batches = epoch_batches([10, 30], 4, 42, 0)
    assert [b.dataset for b in batches] == [0, 1, 0, 1, 0, 1]
    assert sorted(r for b in batches if b.dataset == 0 for r in b.rows) == list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        epoch_batches([10], 0, 42, 0)
