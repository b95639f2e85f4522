"""MultipleNegativesRankingLoss (in-batch negatives, InfoNCE) and its cached (GradCache) form.

The maths is :func:`multiple_negatives_ranking_loss`, a pure function of embeddings. The
``nn.Module`` wrappers embed the columns of a batch with a model and, for distributed training,
gather embeddings from every process first (each anchor then sees the global batch).

Each wrapper has ``forward_backward(features) -> loss``: it computes the loss and its gradients
into the model's parameters. The plain loss does one forward and ``backward()``; the cached loss
does GradCache (Gao et al. 2021): embed without a graph in mini-batches, backward the loss to the
embeddings only, then re-embed each mini-batch with a graph (replaying its dropout RNG) and push
the cached embedding gradients through it. Same gradients, memory bounded by the mini-batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from biencoder.losses.common import (
    SIMILARITIES,
    Features,
    Model,
    _full_precision,
    gather_with_grad,
    similarity_matrix,
)
from biencoder.unpad import Buckets, Column, column_size, embed_column


def multiple_negatives_ranking_loss(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor | None = None,
    scale: float = 20.0,
    *,
    similarity: str = "cosine",
    offset: int = 0,
) -> Tensor:
    """Mean cross-entropy of each anchor against all candidates, its own positive being the target.

    anchors [b, d]; positives [B, d] with B >= b (B > b when gathered across processes, anchor i's
    positive then sits at row ``offset + i``); negatives [m, d], any number of hard negatives that
    every anchor scores too. Candidates are the positives then the negatives.
    """
    if anchors.ndim != 2 or positives.ndim != 2:
        raise ValueError(
            f"anchors and positives must be [n, dim], got {tuple(anchors.shape)}, {tuple(positives.shape)}"
        )
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    batch = anchors.shape[0]
    if offset < 0 or offset + batch > positives.shape[0]:
        raise ValueError(
            f"{batch} anchors at offset {offset} need that many positives, got {positives.shape[0]}"
        )
    candidates = positives if negatives is None else torch.cat([positives, negatives], dim=0)
    scores = similarity_matrix(anchors, candidates, similarity) * scale  # [b, B + m]
    rows = torch.arange(batch, device=anchors.device)
    positive_scores = scores[rows, rows + offset]  # [b]
    return -(positive_scores - torch.logsumexp(scores, dim=1)).mean()


class MultipleNegativesRankingLoss(nn.Module):
    """(anchor, positive[, negative]) columns -> MNRL, optionally over the global batch of all processes."""

    needs_labels = False  # the in-batch losses learn from the columns alone

    def __init__(
        self,
        model: Model,
        scale: float = 20.0,
        similarity: str = "cosine",
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {similarity!r}; expected one of {SIMILARITIES}")
        self.model = model
        self.scale = scale
        self.similarity = similarity
        self.gather_across_devices = gather_across_devices

    def embed(self, features: Column) -> Tensor:
        """[n, dim] embeddings of one column: a padded feature dict or length buckets (unpadded)."""
        return embed_column(self.model, features)

    def loss_from_embeddings(self, columns: Sequence[Tensor]) -> Tensor:
        if len(columns) < 2:
            raise ValueError(f"expected at least 2 columns (anchor, positive), got {len(columns)}")
        anchors, positives, negatives = columns[0], columns[1], list(columns[2:])
        offset = 0
        if self.gather_across_devices:
            positives, offset = gather_with_grad(positives)
            negatives = [gather_with_grad(n)[0] for n in negatives]
        negative = torch.cat(negatives, dim=0) if negatives else None
        with _full_precision(anchors):
            return multiple_negatives_ranking_loss(
                anchors.float(),
                positives.float(),
                None if negative is None else negative.float(),
                self.scale,
                similarity=self.similarity,
                offset=offset,
            )

    def forward(self, features: Sequence[Column]) -> Tensor:
        return self.loss_from_embeddings([self.embed(f) for f in features])

    def forward_backward(self, features: Sequence[Column]) -> Tensor:
        loss = self(features)
        loss.backward()
        return loss.detach()

    def config_dict(self) -> dict[str, Any]:
        """Parameters as the model card lists them (sentence-transformers' names)."""
        return {
            "scale": self.scale,
            "similarity_fct": "cos_sim" if self.similarity == "cosine" else "dot_score",
        }

    @property
    def card_name(self) -> str:
        return "MultipleNegativesRankingLoss"


class _ReplayRng:
    """Snapshot the CPU (and CUDA) RNG now; ``with`` it later to replay the same dropout masks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def __enter__(self) -> None:
        devices = [self.device] if self.cuda is not None else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)

    def __exit__(self, *exc: Any) -> None:
        self._fork.__exit__(*exc)


def _rows(features: Features, start: int, end: int) -> Features:
    """Rows [start, end) of a padded batch, trimmed to their own longest sequence."""
    part = {k: v[start:end] for k, v in features.items()}
    mask = part.get("attention_mask")
    if mask is not None and mask.ndim == 2 and mask.shape[1]:
        width = int(mask.sum(dim=1).max().item())
        if width < mask.shape[1] and bool((mask[:, width:] == 0).all()):
            part = {k: v[:, :width] if v.ndim == 2 else v for k, v in part.items()}
    return part


class CachedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """MNRL with GradCache: the gradients of the plain loss with the memory of ``mini_batch_size`` rows."""

    def __init__(
        self,
        model: Model,
        scale: float = 20.0,
        similarity: str = "cosine",
        gather_across_devices: bool = False,
        mini_batch_size: int = 32,
    ) -> None:
        super().__init__(model, scale, similarity, gather_across_devices)
        if mini_batch_size <= 0:
            raise ValueError(f"mini_batch_size must be positive, got {mini_batch_size}")
        self.mini_batch_size = mini_batch_size

    def _parts(self, column: Column) -> list[tuple[Tensor | slice, Features]]:
        """(rows of the column, their features) per forward pass: the column's length buckets
        (token-budget micro-batches) or ``mini_batch_size`` consecutive rows of a padded batch."""
        if isinstance(column, Buckets):
            return list(zip(column.rows, column.parts, strict=True))
        n = column_size(column)
        return [
            (slice(s, min(s + self.mini_batch_size, n)), _rows(column, s, min(s + self.mini_batch_size, n)))
            for s in range(0, n, self.mini_batch_size)
        ]

    def _assemble(self, column: Column, parts: list[Tensor]) -> Tensor:
        out = torch.cat(parts)
        return out.index_select(0, column.inverse) if isinstance(column, Buckets) else out

    def forward_backward(self, features: Sequence[Column]) -> Tensor:
        first = features[0]
        device = first.inverse.device if isinstance(first, Buckets) else next(iter(first.values())).device
        cached: list[Tensor] = []
        rngs: list[list[_ReplayRng]] = []
        with torch.no_grad():  # pass 1: embeddings without a graph, remembering each part's RNG
            for column in features:
                parts, states = [], []
                for _, part in self._parts(column):
                    states.append(_ReplayRng(device))
                    parts.append(self.embed(part))
                cached.append(self._assemble(column, parts).detach().requires_grad_())
                rngs.append(states)
        loss = self.loss_from_embeddings(cached)  # pass 2: loss -> gradients of the embeddings
        loss.backward()
        for column, reps, states in zip(features, cached, rngs, strict=True):  # pass 3: through the model
            assert reps.grad is not None
            for (rows, part), state in zip(self._parts(column), states, strict=True):
                with state:
                    emb = self.embed(part)
                emb.backward(reps.grad[rows])
        return loss.detach()

    def forward(self, features: Sequence[Column]) -> Tensor:
        """The loss value (no gradients are kept: use ``forward_backward`` to train)."""
        with torch.no_grad():
            return self.loss_from_embeddings(
                [self._assemble(c, [self.embed(p) for _, p in self._parts(c)]) for c in features]
            )

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "mini_batch_size": self.mini_batch_size}

    @property
    def card_name(self) -> str:
        return "CachedMultipleNegativesRankingLoss"
