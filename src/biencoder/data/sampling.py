"""Batch order: shuffled batches per dataset, interleaved round-robin, as sentence-transformers orders them.

For seed ``s`` and epoch ``e`` a ``torch.Generator`` seeded ``s + e`` draws one permutation per
dataset, in dataset order (``torch.randperm``). Each permutation is cut into batches of
``batch_size`` (the last one may be short). With several datasets the batches are interleaved
one per dataset in turn until the dataset with the fewest batches runs out, so some samples of
the larger datasets are not seen in that epoch. This is the order of SentenceTransformerTrainer
(its seedable random sampler for one dataset, ``RoundRobinBatchSampler`` for several);
tests check it against the trainer itself.

``multi_dataset_sampler="proportional"`` uses every batch of every dataset once per epoch: the
same generator first draws a permutation of the dataset labels (dataset d appearing once per
batch it has), then each dataset's row permutation at that dataset's first turn, so a dataset
is picked in proportion to its size (``ProportionalBatchSampler``, also checked against the
trainer).

``batch_sampler="no_duplicates"`` fills each batch greedily from the same permutation with rows
none of whose texts (in any column) is already in the batch; a row that clashes waits for a
later batch, in its permuted order. This is sentence-transformers' NoDuplicatesBatchSampler
(drop_last=False), checked against it in the tests. Such an epoch may need more batches than
``ceil(rows / batch_size)``; the extra ones (the rows hardest to place) are left out of that
epoch so that every epoch has the same number of steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

BATCH_SAMPLERS = ("batch_sampler", "no_duplicates")
MULTI_DATASET_SAMPLERS = ("round_robin", "proportional")
Row = Sequence[str]  # the texts of one row, every column


@dataclass(frozen=True, slots=True)
class Batch:
    dataset: int  # index into the list of datasets
    rows: tuple[int, ...]  # row indices within that dataset


def epoch_batches(
    sizes: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    batch_sampler: str = "batch_sampler",
    rows: Sequence[Sequence[Row]] | None = None,
    multi_dataset_sampler: str = "round_robin",
) -> list[Batch]:
    """All batches of one epoch, in training order; ``rows`` (texts per row, per dataset) are
    needed for ``batch_sampler="no_duplicates"``."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not sizes or any(n <= 0 for n in sizes):
        raise ValueError(f"every dataset needs at least one row, got sizes {list(sizes)}")
    if batch_sampler not in BATCH_SAMPLERS:
        raise ValueError(f"unknown batch_sampler {batch_sampler!r}; valid: {', '.join(BATCH_SAMPLERS)}")
    if batch_sampler == "no_duplicates" and (rows is None or [len(r) for r in rows] != list(sizes)):
        raise ValueError("batch_sampler 'no_duplicates' needs the texts of every row of every dataset")
    if multi_dataset_sampler not in MULTI_DATASET_SAMPLERS:
        raise ValueError(
            f"unknown multi_dataset_sampler {multi_dataset_sampler!r}; "
            f"valid: {', '.join(MULTI_DATASET_SAMPLERS)}"
        )
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)

    def dataset_batches(d: int) -> list[tuple[int, ...]]:
        n = sizes[d]
        order = torch.randperm(n, generator=generator).tolist()
        if batch_sampler == "no_duplicates" and rows is not None:
            batches = no_duplicate_batches(order, rows[d], batch_size)
            limit = -(-n // batch_size)
            if len(batches) > limit:
                left = sum(len(b) for b in batches[limit:])
                logger.info("epoch %d: %d rows whose texts repeat wait for another epoch", epoch, left)
            return batches[:limit]
        return [tuple(order[i : i + batch_size]) for i in range(0, n, batch_size)]

    if len(sizes) > 1 and multi_dataset_sampler == "proportional":
        return _proportional(sizes, batch_size, generator, dataset_batches)
    per_dataset = [dataset_batches(d) for d in range(len(sizes))]
    if len(per_dataset) == 1:
        return [Batch(0, rows) for rows in per_dataset[0]]
    rounds = min(len(b) for b in per_dataset)
    return [Batch(d, per_dataset[d][r]) for r in range(rounds) for d in range(len(per_dataset))]


def _proportional(
    sizes: Sequence[int],
    batch_size: int,
    generator: torch.Generator,
    dataset_batches: Callable[[int], list[tuple[int, ...]]],
) -> list[Batch]:
    """Every batch of every dataset, datasets drawn in a random order weighted by their batch counts."""
    labels = [d for d, n in enumerate(sizes) for _ in range(-(-n // batch_size))]
    order = [labels[i] for i in torch.randperm(len(labels), generator=generator).tolist()]
    made: dict[int, list[tuple[int, ...]]] = {}
    taken = [0] * len(sizes)
    out = []
    for d in order:
        if d not in made:  # rows shuffled at the dataset's first turn, as the trainer's lazy samplers do
            made[d] = dataset_batches(d)
        if taken[d] < len(made[d]):  # no_duplicates may make fewer batches than the labels count
            out.append(Batch(d, made[d][taken[d]]))
        taken[d] += 1
        if taken[d] == len(made[d]) and sizes[d] % batch_size:
            # torch's RandomSampler draws one more permutation (of which it yields nothing) before
            # its batch sampler can emit a short last batch; the draw moves the shared generator on.
            torch.randperm(sizes[d], generator=generator)
    return out


def no_duplicate_batches(order: Sequence[int], rows: Sequence[Row], batch_size: int) -> list[tuple[int, ...]]:
    """Greedy batches over ``order``: a row joins the batch when none of its texts is in it yet."""
    remaining = list(order)
    batches: list[tuple[int, ...]] = []
    while remaining:
        batch: list[int] = []
        seen: set[str] = set()
        waiting: list[int] = []
        for position, row in enumerate(remaining):
            texts = set(rows[row])
            if not seen.isdisjoint(texts):
                waiting.append(row)  # clashes: tried again for the next batch, in order
                continue
            batch.append(row)
            if len(batch) == batch_size:
                waiting.extend(remaining[position + 1 :])
                break
            seen |= texts
        batches.append(tuple(batch))
        remaining = waiting
    return batches


def batches_per_epoch(
    sizes: Sequence[int], batch_size: int, multi_dataset_sampler: str = "round_robin"
) -> int:
    counts = [-(-n // batch_size) for n in sizes]
    if len(counts) == 1 or multi_dataset_sampler == "proportional":
        return sum(counts)
    return min(counts) * len(counts)
