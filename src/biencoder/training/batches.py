"""Training data ready for the loop: every text tokenised once, batches padded from the cached ids."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from biencoder.data.pairs import PairDataset
from biencoder.data.sampling import Batch
from biencoder.modules.transformer import TokenizedTexts, Transformer
from biencoder.unpad import Column, bucket

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedDataset:
    data: PairDataset
    columns: list[TokenizedTexts]  # one per text column

    def __len__(self) -> int:
        return len(self.data)


def tokenize_datasets(transformer: Transformer, datasets: list[PairDataset]) -> list[TokenizedDataset]:
    out = []
    for data in datasets:
        columns = [transformer.tokenize_unpadded(data.column(c)) for c in range(data.num_columns)]
        truncated = sum(int(c.truncated.sum()) for c in columns)
        logger.info(
            "%s: %d rows x %d columns tokenised; %d texts cut at %d tokens",
            data.name,
            len(data),
            data.num_columns,
            truncated,
            transformer.max_seq_length,
        )
        out.append(TokenizedDataset(data, columns))
    return out


def collate(
    transformer: Transformer,
    datasets: list[TokenizedDataset],
    batch: Batch,
    device: torch.device,
    unpad: bool = False,
    max_tokens: int | None = None,
) -> list[Column]:
    """One input per column for the rows of ``batch``: a feature dict padded to the batch's longest
    text, or (``unpad``) :class:`~biencoder.unpad.Buckets` of similar lengths, each padded to its own
    longest and holding at most ``max_tokens`` padded tokens (the cached loss's micro-batches).

    The groups are planned from the cached token counts on the host: no device synchronisation.
    """
    dataset = datasets[batch.dataset]
    rows = [int(i) for i in batch.rows]
    features: list[Column] = []
    for column in dataset.columns:
        if unpad:
            lengths = [len(column.ids[i]) for i in rows]
            features.append(
                bucket(_collate_rows(transformer, column, rows), lengths, device, max_tokens=max_tokens)
            )
        else:
            padded = transformer.collate(column, rows)
            features.append({k: v.to(device, non_blocking=True) for k, v in padded.items()})
    return features


def _collate_rows(
    transformer: Transformer, column: TokenizedTexts, rows: list[int]
) -> Callable[[Sequence[int]], dict[str, Tensor]]:
    """Pads the texts at the given positions of ``rows`` (a batch's rows) of ``column``."""

    def pad(positions: Sequence[int]) -> dict[str, Tensor]:
        return transformer.collate(column, [rows[p] for p in positions])

    return pad


def duplicate_texts(datasets: list[TokenizedDataset], batch: Batch) -> int:
    """How many texts of the batch repeat another of the same role (a false in-batch negative)."""
    data = datasets[batch.dataset].data
    anchors = [data.anchors[i] for i in batch.rows]
    candidates = [data.column(c)[i] for c in range(1, data.num_columns) for i in batch.rows]
    return (len(anchors) - len(set(anchors))) + (len(candidates) - len(set(candidates)))
