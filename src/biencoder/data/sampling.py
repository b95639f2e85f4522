"""Batch order: shuffled batches per dataset, interleaved round-robin, as sentence-transformers orders them.

For seed ``s`` and epoch ``e`` a ``torch.Generator`` seeded ``s + e`` draws one permutation per
dataset, in dataset order (``torch.randperm``). Each permutation is cut into batches of
``batch_size`` (the last one may be short). With several datasets the batches are interleaved
one per dataset in turn until the dataset with the fewest batches runs out, so some samples of
the larger datasets are not seen in that epoch. This is the order of SentenceTransformerTrainer
(its seedable random sampler for one dataset, ``RoundRobinBatchSampler`` for several);
tests check it against the trainer itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class Batch:
    dataset: int  # index into the list of datasets
    rows: tuple[int, ...]  # row indices within that dataset


def epoch_batches(sizes: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[Batch]:
    """All batches of one epoch, in training order."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not sizes or any(n <= 0 for n in sizes):
        raise ValueError(f"every dataset needs at least one row, got sizes {list(sizes)}")
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    per_dataset: list[list[tuple[int, ...]]] = []
    for n in sizes:
        order = torch.randperm(n, generator=generator).tolist()
        per_dataset.append([tuple(order[i : i + batch_size]) for i in range(0, n, batch_size)])
    if len(per_dataset) == 1:
        return [Batch(0, rows) for rows in per_dataset[0]]
    rounds = min(len(b) for b in per_dataset)
    return [Batch(d, per_dataset[d][r]) for r in range(rounds) for d in range(len(per_dataset))]


def batches_per_epoch(sizes: Sequence[int], batch_size: int) -> int:
    counts = [-(-n // batch_size) for n in sizes]
    return counts[0] if len(counts) == 1 else min(counts) * len(counts)
