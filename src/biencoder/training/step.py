"""One training step: collate the batch (unpadded by default), forward and backward the loss under
the configured precision, average gradients across processes, clip, and step AdamW at the
scheduled learning rate. The loop (``biencoder.training.loop``) decides which batch and when to
log, evaluate and save; this module holds what a step is, and the pieces it is built from.

The step synchronises with the device once, for the loss it returns (the logged value): the
length groups are planned on the host from cached token counts, clipping keeps the norm on the
device, and on CUDA AdamW runs fused.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from biencoder.data.sampling import Batch
from biencoder.encoder import SentenceEncoder
from biencoder.training import distributed as dist
from biencoder.training.batches import TokenizedDataset, collate
from biencoder.training.config import TrainConfig
from biencoder.training.objectives import Objective


def lr_factor(step: int, total: int, warmup: int, kind: str = "linear") -> float:
    """The multiplier of the base learning rate at 0-based ``step`` (transformers' schedules)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if kind == "constant":
        return 1.0
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW; as transformers does, biases and LayerNorm weights get no weight decay."""
    no_decay: set[str] = set()
    for name, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            if isinstance(module, torch.nn.LayerNorm) or pname == "bias":
                no_decay.add(f"{name}.{pname}" if name else pname)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n not in no_decay], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
    ]
    # CPU, foreach: the multi-tensor kernels give bit-identical weights to torch's default (for-loop)
    # AdamW, which on CPU it does not pick itself, and step MiniLM's 22M parameters ~15x faster there.
    # CUDA, fused: one kernel for the whole update, on the device, with no host synchronisation.
    on_cuda = any(p.device.type == "cuda" for _, p in named)
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        **({"fused": True} if on_cuda else {"foreach": True}),
    )


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and config.precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if config.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Step:
    """``step(data, batch, index) -> loss``: one optimizer step of ``config``'s recipe, with the loss
    of the batch's dataset (``objectives[batch.dataset]``)."""

    config: TrainConfig
    encoder: SentenceEncoder
    optimizer: torch.optim.AdamW
    objectives: list[Objective]  # one per dataset
    world: dist.DistInfo
    total: int  # steps of the whole run: the schedule's length
    params: list[torch.nn.Parameter] = field(init=False)
    warmup: int = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.params = [p for p in self.encoder.parameters() if p.requires_grad]
        self.warmup = c.warmup_steps or math.ceil(c.warmup_ratio * self.total)

    def token_budget(self, objective: Objective) -> int | None:
        """The cached loss's micro-batches: as many padded tokens as mini_batch_size rows of full length."""
        c = self.config
        return c.mini_batch_size * c.max_seq_length if objective.name == "cached_mnrl" else None

    def __call__(self, data: list[TokenizedDataset], batch: Batch, index: int) -> float:
        """Train on ``batch`` as step ``index`` (0-based); returns the loss (mean across processes)."""
        c, device = self.config, self.encoder.device
        objective = self.objectives[batch.dataset]
        budget = self.token_budget(objective)
        features = collate(self.encoder.transformer, data, batch, device, c.unpad, budget)
        factor = lr_factor(index, self.total, self.warmup, c.lr_scheduler)
        for group in self.optimizer.param_groups:
            group["lr"] = c.learning_rate * factor
        with autocast(c, device):
            if objective.loss.needs_labels:
                loss = objective.loss.forward_backward(features, objective.rows(batch.rows, device))
            else:
                loss = objective.loss.forward_backward(features)
        dist.average_gradients(self.params, self.world.world_size)
        if objective.weight != 1.0:  # the step's gradients are this batch's alone: scaling them weights it
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(objective.weight)
            loss = loss * objective.weight
        torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.item())  # the one host synchronisation of the step
        return dist.mean_across(value) if self.world.enabled else value
