"""The no-duplicates batch sampler: sentence-transformers' NO_DUPLICATES order, no text twice."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from biencoder.data.sampling import BATCH_SAMPLERS, epoch_batches
from biencoder.training.config import BATCH_SAMPLERS as CONFIG_SAMPLERS


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Pairs drawn from a small pool: many texts repeat, within and across columns."""
    rng = random.Random(seed)
    pool = [f"text {i}" for i in range(n // 2)]
    return [(rng.choice(pool), rng.choice(pool)) for _ in range(n)]


@pytest.mark.reference
@pytest.mark.parametrize("seed", [0, 42])
@pytest.mark.parametrize("epoch", [0, 2])
def test_equals_sentence_transformers_no_duplicates_sampler(seed: int, epoch: int) -> None:
    datasets = pytest.importorskip("datasets")
    sampler_module = pytest.importorskip("sentence_transformers.base.sampler")
    rows = _rows(120, seed)
    dataset = datasets.Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]})
    ref = sampler_module.NoDuplicatesBatchSampler(
        dataset, batch_size=16, drop_last=False, generator=torch.Generator(), seed=seed
    )
    ref.set_epoch(epoch)
    expected = [tuple(b) for b in ref]
    ours = epoch_batches([len(rows)], 16, seed, epoch, batch_sampler="no_duplicates", rows=[rows])
    limit = -(-len(rows) // 16)
    assert [b.rows for b in ours] == expected[:limit]


def test_no_batch_repeats_a_text_and_the_order_is_reproducible() -> None:
    rows = _rows(200, 3)
    first = epoch_batches([200], 32, 7, 1, batch_sampler="no_duplicates", rows=[rows])
    again = epoch_batches([200], 32, 7, 1, batch_sampler="no_duplicates", rows=[rows])
    assert first == again
    for batch in first:
        texts = [t for i in batch.rows for t in set(rows[i])]
        assert len(texts) == len(set(texts))
    plain = epoch_batches([200], 32, 7, 1)
    assert any(len({t for i in b.rows for t in rows[i]}) < 2 * len(b.rows) for b in plain)  # it had repeats
    assert len(first) == len(plain)
    assert len({i for b in first for i in b.rows}) == sum(len(b.rows) for b in first)  # each row once at most


def test_choices_and_errors() -> None:
    assert BATCH_SAMPLERS == CONFIG_SAMPLERS
    with pytest.raises(ValueError, match="needs the texts"):
        epoch_batches([10], 4, 0, 0, batch_sampler="no_duplicates")
    with pytest.raises(ValueError, match="unknown batch_sampler"):
        epoch_batches([10], 4, 0, 0, batch_sampler="random")


def test_train_with_no_duplicates(tiny_model_dir: Path, tmp_path: Path) -> None:
    from biencoder.cli import main
    from tests.training.helpers import write_pairs

    data = write_pairs(tmp_path / "pairs.jsonl", 16)
    out = tmp_path / "out"
    argv = ["-q", "train", "--base", str(tiny_model_dir), "--data", str(data), "--output", str(out)]
    argv += ["--batch-size", "4", "--max-steps", "3", "--max-seq-length", "24", "--device", "cpu"]
    assert main([*argv, "--batch-sampler", "no-duplicates"]) == 0
    assert "no_duplicates" in (out / "README.md").read_text()
