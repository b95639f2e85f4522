"""GISTEmbedLoss (Solatorio 2024): in-batch negatives that a frozen guide model scores above the
positive are masked out. The maths is :func:`gist_embed_loss`, a pure function of embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biencoder.losses.common import Model, _full_precision, gather_with_grad, similarity_matrix
from biencoder.losses.ranking import MultipleNegativesRankingLoss
from biencoder.unpad import Column, embed_column

MARGIN_STRATEGIES = ("absolute", "relative")


def gist_embed_loss(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor | None,
    guide_anchors: Tensor,
    guide_positives: Tensor,
    guide_negatives: Tensor | None = None,
    temperature: float = 0.01,
    *,
    margin_strategy: str = "absolute",
    margin: float = 0.0,
    contrast_anchors: bool = True,
    contrast_positives: bool = True,
    offset: int = 0,
) -> Tensor:
    """GISTEmbed (Solatorio 2024): MNRL over cosine / ``temperature`` where every candidate that
    the guide scores above the anchor's own positive (less the margin) is masked out.

    Candidates of anchor i: all positives, then (``contrast_anchors``) the other anchors, then
    (``contrast_positives``) the other positives seen from positive i, then the negatives [m, d].
    ``margin_strategy`` "absolute" masks guide scores above ``s - margin``, "relative" above
    ``s - |s| * margin``, s being the guide's anchor-positive score; the true positive is never
    masked. ``offset``: as in :func:`multiple_negatives_ranking_loss` (gathered positives).
    """
    if margin_strategy not in MARGIN_STRATEGIES:
        raise ValueError(f"unknown margin_strategy {margin_strategy!r}; expected one of {MARGIN_STRATEGIES}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if (negatives is None) != (guide_negatives is None):
        raise ValueError("give negatives and guide_negatives together, or neither")
    batch = anchors.shape[0]
    if offset < 0 or offset + batch > positives.shape[0]:
        raise ValueError(
            f"{batch} anchors at offset {offset} need that many positives, got {positives.shape[0]}"
        )
    rows = torch.arange(batch, device=anchors.device)
    guide_ap = similarity_matrix(guide_anchors, guide_positives)  # [b, B]
    threshold = guide_ap[rows, rows + offset].unsqueeze(1)  # [b, 1]
    limit = threshold - margin if margin_strategy == "absolute" else threshold - threshold.abs() * margin

    def masked(scores: Tensor, guide: Tensor, keep: Tensor | None = None) -> Tensor:
        drop = guide > limit
        if keep is not None:
            drop = drop & ~keep
        return scores.masked_fill(drop, float("-inf"))

    own_positive = torch.zeros_like(guide_ap, dtype=torch.bool)
    own_positive[rows, rows + offset] = True
    blocks = [masked(similarity_matrix(anchors, positives), guide_ap, keep=own_positive)]
    if contrast_anchors:
        aa = masked(similarity_matrix(anchors, anchors), similarity_matrix(guide_anchors, guide_anchors))
        blocks.append(aa.masked_fill(torch.eye(batch, dtype=torch.bool, device=aa.device), float("-inf")))
    if contrast_positives:
        mine = slice(offset, offset + batch)
        pp = masked(
            similarity_matrix(positives[mine], positives),
            similarity_matrix(guide_positives[mine], guide_positives),
        )
        blocks.append(pp.masked_fill(own_positive, float("-inf")))
    if negatives is not None and guide_negatives is not None:
        blocks.append(
            masked(similarity_matrix(anchors, negatives), similarity_matrix(guide_anchors, guide_negatives))
        )
    scores = torch.cat(blocks, dim=1) / temperature  # [b, candidates]
    return F.cross_entropy(scores, rows + offset)


class GISTEmbedLoss(MultipleNegativesRankingLoss):
    """(anchor, positive[, negative ...]) columns -> :func:`gist_embed_loss`, the guide embedding
    the same tokens without gradients (it must share the model's tokenizer vocabulary)."""

    def __init__(
        self,
        model: Model,
        guide: nn.Module,
        temperature: float = 0.01,
        margin_strategy: str = "absolute",
        margin: float = 0.0,
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        gather_across_devices: bool = False,
        guide_name: str | None = None,
    ) -> None:
        super().__init__(model, 1.0 / temperature, "cosine", gather_across_devices)
        if margin_strategy not in MARGIN_STRATEGIES:
            raise ValueError(
                f"unknown margin_strategy {margin_strategy!r}; expected one of {MARGIN_STRATEGIES}"
            )
        self.guide = guide.eval().requires_grad_(False)
        self.guide_name = guide_name or type(guide).__name__
        self.temperature = temperature
        self.margin_strategy = margin_strategy
        self.margin = margin
        self.contrast_anchors = contrast_anchors
        self.contrast_positives = contrast_positives

    def train(self, mode: bool = True) -> GISTEmbedLoss:
        super().train(mode)
        self.guide.eval()  # the guide never trains, nor drops out
        return self

    def forward(self, features: Sequence[Column]) -> Tensor:
        if len(features) < 2:
            raise ValueError(f"expected at least 2 columns (anchor, positive), got {len(features)}")
        columns = [self.embed(f) for f in features]
        with torch.no_grad():
            guide = [embed_column(self.guide, f) for f in features]
        return self.loss_from_columns(columns, guide)

    def loss_from_columns(self, columns: Sequence[Tensor], guide: Sequence[Tensor]) -> Tensor:
        (anchors, positives, *negatives), (g_anchors, g_positives, *g_negatives) = columns, guide
        offset = 0
        if self.gather_across_devices:
            positives, offset = gather_with_grad(positives)
            g_positives = gather_with_grad(g_positives)[0]
            negatives = [gather_with_grad(n)[0] for n in negatives]
            g_negatives = [gather_with_grad(n)[0] for n in g_negatives]

        def cat(parts: list[Tensor]) -> Tensor | None:
            return torch.cat(parts).float() if parts else None

        with _full_precision(anchors):  # temperature 0.01: bf16 scores would be off by up to 0.4
            return gist_embed_loss(
                anchors.float(),
                positives.float(),
                cat(negatives),
                g_anchors.float(),
                g_positives.float(),
                cat(g_negatives),
                self.temperature,
                margin_strategy=self.margin_strategy,
                margin=self.margin,
                contrast_anchors=self.contrast_anchors,
                contrast_positives=self.contrast_positives,
                offset=offset,
            )

    def config_dict(self) -> dict[str, Any]:
        return {
            "guide": self.guide_name,
            "temperature": self.temperature,
            "margin_strategy": self.margin_strategy,
            "margin": self.margin,
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
        }

    @property
    def card_name(self) -> str:
        return "GISTEmbedLoss"
