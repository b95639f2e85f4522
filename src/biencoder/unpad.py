"""Unpadded training batches: a column of texts as groups of similar length, each padded only to
its own longest text.

A batch of 64 MS MARCO (query, passage) pairs padded sentence-transformers' way spends about half
of its matrix work on padding: queries of 9 tokens padded to 34, passages of 80 padded to 197.
Here each column's rows are sorted by length and cut into groups (:func:`length_groups`, an exact
dynamic programme over the sorted lengths) that minimise the padded tokens plus a fixed cost per
model call; each group runs through the transformer on its own, so attention never crosses two
texts and no token attends to padding it did not have before. The embeddings are put back in
the batch's order (:meth:`Buckets.embed`, an index_select that autograd reverses), so the loss
sees the whole batch: the same in-batch negatives, the same loss and the same gradients as the
padded batch, up to float32 reduction order (a row's math does not depend on its neighbours).

On CPU this is what unpadding can be without variable-length attention kernels; the CUDA path
uses the same groups (PyTorch's fused attention takes each group's padded tensor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Features = dict[str, Tensor]
Model = Callable[[Features], dict[str, Tensor]]

# The fixed cost of one more model call, in padded tokens: the per-call work (kernel launches,
# the Python of 6 layers, small-matrix inefficiency) measured on a 2-core CPU is about what 96
# tokens of MiniLM forward+backward cost (benchmarks/train.py --overhead sweeps it).
CALL_OVERHEAD_TOKENS = 96
# Past this many rows a group's fixed cost is amortised; capping runs keeps the search O(n) for the
# large batches of the cached loss.
MAX_GROUP_ROWS = 256


def length_groups(
    lengths: Sequence[int] | np.ndarray,
    overhead: int = CALL_OVERHEAD_TOKENS,
    max_tokens: int | None = None,
) -> list[np.ndarray]:
    """Positions of ``lengths`` in groups of similar length, longest group first.

    Minimises ``sum(rows(g) * longest(g) + overhead)`` over partitions of the sorted lengths into
    runs (an optimal partition by padded size is always a run of the sorted order). ``max_tokens``
    caps ``rows(g) * longest(g)`` of every group (GradCache's memory bound); a single text over it
    still gets a group of its own.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return []
    if overhead < 0:
        raise ValueError(f"overhead must be >= 0, got {overhead}")
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = np.argsort(-lengths, kind="stable")  # longest first: group g's longest is its first
    sorted_lengths = lengths[order].tolist()
    # best[j]: the least cost of the first j sorted rows; cut[j]: where its last group starts
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end - 1, -1, -1):
            rows, longest = end - start, sorted_lengths[start]
            if rows > MAX_GROUP_ROWS or (max_tokens is not None and rows * longest > max_tokens and rows > 1):
                break  # longer runs ending here only grow
            cost = best[start] + rows * longest + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups: list[np.ndarray] = []
    end = n
    while end > 0:
        start = cut[end]
        groups.append(order[start:end])
        end = start
    return groups[::-1]


@dataclass(frozen=True)
class Buckets:
    """One column of a batch as length groups: ``parts[i]`` holds the rows ``rows[i]`` of the column,
    padded to their own longest; ``inverse`` puts the concatenated parts back in column order."""

    parts: tuple[Features, ...]
    rows: tuple[Tensor, ...]  # int64 positions in the column, on the parts' device
    inverse: Tensor  # [n] position of each column row within cat(parts)

    def __len__(self) -> int:
        return int(self.inverse.shape[0])

    @property
    def padded_tokens(self) -> int:
        return sum(int(p["input_ids"].numel()) for p in self.parts)

    def embed(self, model: Model) -> Tensor:
        """[n, dim] sentence embeddings in the column's order."""
        out = torch.cat([model(dict(part))["sentence_embedding"] for part in self.parts])
        return out.index_select(0, self.inverse)


def bucket(
    collate: Callable[[Sequence[int]], Features],
    lengths: Sequence[int] | np.ndarray,
    device: torch.device,
    overhead: int = CALL_OVERHEAD_TOKENS,
    max_tokens: int | None = None,
) -> Buckets:
    """Group a column's rows by length; ``collate(positions)`` pads the given positions (on CPU)."""
    groups = length_groups(lengths, overhead, max_tokens)
    order = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    parts = tuple(
        {k: v.to(device, non_blocking=True) for k, v in collate(g.tolist()).items()} for g in groups
    )
    rows = tuple(torch.from_numpy(g.astype(np.int64)).to(device, non_blocking=True) for g in groups)
    return Buckets(parts, rows, torch.from_numpy(inverse).to(device, non_blocking=True))


Column = Features | Buckets


def embed_column(model: Model, column: Column) -> Tensor:
    """[n, dim] sentence embeddings of a padded feature dict or of :class:`Buckets`."""
    if isinstance(column, Buckets):
        return column.embed(model)
    return model(dict(column))["sentence_embedding"]


def column_size(column: Column) -> int:
    if isinstance(column, Buckets):
        return len(column)
    return int(next(iter(column.values())).shape[0])
