"""CoSENTLoss (Su 2022): for pairs with a similarity score, every pair scored lower by the labels
must have a lower cosine than every pair scored higher.

``loss = log(1 + sum over (i, j) with label_i < label_j of exp(scale * (cos_i - cos_j)))``. The maths
is :func:`cosent_loss`, equal to sentence-transformers' ``CoSENTLoss``; it sees only the ranking of
the labels, so STSb's 0-5 scores need no rescaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biencoder.losses.common import Model, _full_precision
from biencoder.unpad import Column, embed_column


def cosent_loss(first: Tensor, second: Tensor, labels: Tensor, scale: float = 20.0) -> Tensor:
    """first, second [b, d]: the pairs' embeddings; labels [b]: their gold scores (any scale)."""
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(
            f"expected two [batch, dim] columns, got {tuple(first.shape)}, {tuple(second.shape)}"
        )
    labels = labels.reshape(-1)
    if labels.shape[0] != first.shape[0]:
        raise ValueError(f"expected {first.shape[0]} labels (one per pair), got {labels.shape[0]}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    scores = F.cosine_similarity(first, second, dim=-1) * scale  # [b]
    diff = scores[:, None] - scores[None, :]  # [b, b]: cos_i - cos_j
    lower = labels[:, None].float() < labels[None, :].float()  # pair i is scored below pair j
    terms = diff[lower]
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


class CoSENTLoss(nn.Module):
    """(sentence1, sentence2) columns with a score per pair as labels -> :func:`cosent_loss`."""

    needs_labels = True

    def __init__(self, model: Model, scale: float = 20.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.model = model
        self.scale = scale

    def embed(self, features: Column) -> Tensor:
        return embed_column(self.model, features)

    def forward(self, features: Sequence[Column], labels: Tensor | None = None) -> Tensor:
        if len(features) != 2:
            raise ValueError(f"CoSENTLoss takes 2 text columns (a pair), got {len(features)}")
        if labels is None:
            raise ValueError("CoSENTLoss needs a score per pair as labels")
        first, second = (self.embed(f) for f in features)
        with _full_precision(first):
            return cosent_loss(first.float(), second.float(), labels, self.scale)

    def forward_backward(self, features: Sequence[Column], labels: Tensor | None = None) -> Tensor:
        loss = self(features, labels)
        loss.backward()
        return loss.detach()

    def config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "similarity_fct": "pairwise_cos_sim"}

    @property
    def card_name(self) -> str:
        return "CoSENTLoss"
