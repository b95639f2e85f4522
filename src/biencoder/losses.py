"""MultipleNegativesRankingLoss (in-batch negatives, InfoNCE), its cached (GradCache) form, and
GISTEmbedLoss (in-batch negatives that a guide model scores above the positive are masked).

The maths is :func:`multiple_negatives_ranking_loss` / :func:`gist_embed_loss`, pure functions of
embeddings. The
``nn.Module`` wrappers embed the columns of a batch with a model and, for distributed training,
gather embeddings from every process first (each anchor then sees the global batch).

Each wrapper has ``forward_backward(features) -> loss``: it computes the loss and its gradients
into the model's parameters. The plain loss does one forward and ``backward()``; the cached loss
does GradCache (Gao et al. 2021): embed without a graph in mini-batches, backward the loss to the
embeddings only, then re-embed each mini-batch with a graph (replaying its dropout RNG) and push
the cached embedding gradients through it. Same gradients, memory bounded by the mini-batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biencoder.unpad import Buckets, Column, column_size, embed_column

logger = logging.getLogger(__name__)

SIMILARITIES = ("cosine", "dot")
MARGIN_STRATEGIES = ("absolute", "relative")
Features = dict[str, Tensor]
Model = Callable[[Features], dict[str, Tensor]]


def similarity_matrix(a: Tensor, b: Tensor, similarity: str = "cosine") -> Tensor:
    """[n, m] pairwise similarities: cosine (sentence-transformers' cos_sim) or dot product."""
    if similarity == "cosine":
        a, b = F.normalize(a, p=2, dim=1), F.normalize(b, p=2, dim=1)
    elif similarity != "dot":
        raise ValueError(f"unknown similarity {similarity!r}; expected one of {SIMILARITIES}")
    return a @ b.T


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


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient for this process's rows."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        import torch.distributed as dist

        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows, ctx.rank = tensor.shape[0], rank
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``tensor`` from every process (gradients flow back to each); returns (all, offset)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    return _GatherWithGrad.apply(tensor), dist.get_rank() * tensor.shape[0]


def _full_precision(like: Tensor) -> torch.autocast:
    """Autocast off: under bf16 autocast the scores are still float32. A bf16 cosine is off by up to
    2^-8, which the scale of 20 turns into a 0.04 logit error on every pair."""
    return torch.autocast(like.device.type, enabled=False)


class MultipleNegativesRankingLoss(nn.Module):
    """(anchor, positive[, negative]) columns -> MNRL, optionally over the global batch of all processes."""

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
