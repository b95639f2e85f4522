"""Dropout whose random mask is drawn on every core: torch draws CPU dropout masks on one thread.

A training step of MiniLM on 64 (query, passage) pairs draws ~400 million dropout decisions (the
attention probabilities alone are [64, 12, 256, 256] per layer). torch's CPU ``bernoulli_`` is
serial (28-36 ms for 7.9 million, with 1 or 2 threads alike); here the mask comes from numpy's PCG64
in parts filled by a thread pool (numpy releases the GIL): 13 ms on 2 cores.

Same distribution as ``F.dropout``: each element is dropped independently with probability ``p``
(float32 uniforms against ``p``: exact to 2^-24) and the rest are scaled by 1 / (1 - p). The
streams are seeded from torch's generator, split into fixed-size parts independent of the thread
count, so ``torch.manual_seed`` or a restored RNG state repeats the masks exactly.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

PART = 1 << 20  # elements per independently seeded stream


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="biencoder-dropout")


def dropout_mask(shape: tuple[int, ...] | torch.Size, p: float) -> Tensor:
    """A bool CPU tensor of ``shape``, True (drop) with probability ``p`` independently per element."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (1,)).item())  # from torch's generator: seeded, checkpointed
    drop = np.empty(n, dtype=np.bool_)
    starts = range(0, n, PART)
    streams = np.random.SeedSequence(seed).spawn(len(starts))

    def fill(i: int) -> None:
        lo = starts[i]
        hi = min(n, lo + PART)
        uniforms = np.random.Generator(np.random.PCG64(streams[i])).random(hi - lo, dtype=np.float32)
        np.less(uniforms, p, out=drop[lo:hi])

    workers = max(1, torch.get_num_threads())
    if workers == 1 or len(starts) == 1:
        for i in range(len(starts)):
            fill(i)
    else:
        list(_pool(workers).map(fill, range(len(starts))))
    return torch.from_numpy(drop).view(tuple(shape))


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the mask from :func:`dropout_mask` on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    # mul by a scalar keeps no tensor for backward; masked_fill_ keeps the 1-byte mask only
    return x.mul(1.0 / (1.0 - p)).masked_fill_(dropout_mask(x.shape, p), 0.0)


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing CPU masks with :func:`dropout`; no parameters, so saved models are unchanged."""

    def forward(self, input: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(input)
        return dropout(input, self.p, self.training)


def use_parallel_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` in ``model`` with :class:`Dropout`; returns how many were replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, Dropout(child.p, child.inplace).train(child.training))
                replaced += 1
    return replaced
