"""What every loss shares: the similarity matrix, a gather across processes that keeps gradients,
and a guard that keeps the scores in float32 under autocast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

SIMILARITIES = ("cosine", "dot")
Features = dict[str, Tensor]
Model = Callable[[Features], dict[str, Tensor]]


def similarity_matrix(a: Tensor, b: Tensor, similarity: str = "cosine") -> Tensor:
    """[n, m] pairwise similarities: cosine (sentence-transformers' cos_sim) or dot product."""
    if similarity == "cosine":
        a, b = F.normalize(a, p=2, dim=1), F.normalize(b, p=2, dim=1)
    elif similarity != "dot":
        raise ValueError(f"unknown similarity {similarity!r}; expected one of {SIMILARITIES}")
    return a @ b.T


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
