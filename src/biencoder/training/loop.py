"""The training loop: read, tokenise once, then step through the batches sentence-transformers would feed.

Each step (``biencoder.training.step``) collates the batch from cached token ids (unpadded: length
groups), runs the forward+backward of its dataset's loss (``biencoder.training.objectives``),
averages gradients across processes, clips to ``max_grad_norm`` and steps AdamW at the scheduled
learning rate. Every ``logging_steps`` the mean loss is logged (with several datasets, each
dataset's own mean too), every ``eval_steps`` the evaluators run, every ``save_steps`` (and at the
end) a checkpoint is written; the output folder gets the model, its card and a loss plot.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biencoder.data.sampling import Batch, epoch_batches
from biencoder.data.sources import load_all
from biencoder.encoder import SentenceEncoder
from biencoder.evaluation.base import Evaluator
from biencoder.modules.attention import use_chunked_attention
from biencoder.modules.dropout import use_parallel_dropout
from biencoder.progress import Progress
from biencoder.training import checkpoint as ckpt
from biencoder.training import distributed as dist
from biencoder.training import selection
from biencoder.training.batches import TokenizedDataset, duplicate_texts, tokenize_datasets
from biencoder.training.config import TrainConfig
from biencoder.training.objectives import Objective, build_objectives
from biencoder.training.output import write_output
from biencoder.training.step import Step, make_optimizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    log_history: list[dict[str, float]]
    eval_history: list[dict[str, float]]
    seconds: float
    global_step: int
    step_losses: list[float] = field(default_factory=list)
    pairs_seen: int = 0
    best_step: int | None = None  # keep_best: the step whose weights were saved
    best_metric: float | None = None

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_seen / self.seconds if self.seconds > 0 else 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class Plan:
    """Which batch each process trains on at each global step."""

    def __init__(
        self,
        config: TrainConfig,
        sizes: Sequence[int],
        world: dist.DistInfo,
        rows: Sequence[Sequence[Sequence[str]]] | None = None,
    ) -> None:
        self.config, self.sizes, self.world, self.rows = config, list(sizes), world, rows
        n_batches = len(self._epoch_batches(0))
        self.steps_per_epoch = n_batches // world.world_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{n_batches} batches cannot feed {world.world_size} processes")
        if n_batches % world.world_size:
            logger.warning(
                "the last %d batch(es) of each epoch are dropped: too few for all %d processes",
                n_batches % world.world_size,
                world.world_size,
            )
        self.total = config.max_steps if config.max_steps > 0 else config.epochs * self.steps_per_epoch
        self._epoch, self._batches = -1, list[Batch]()

    def batch(self, step: int) -> Batch:
        epoch = step // self.steps_per_epoch
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        index = (step % self.steps_per_epoch) * self.world.world_size + self.world.rank
        return self._batches[index]

    def _epoch_batches(self, epoch: int) -> list[Batch]:
        c = self.config
        return epoch_batches(
            self.sizes,
            c.batch_size,
            c.seed,
            epoch,
            batch_sampler=c.batch_sampler,
            rows=self.rows,
            multi_dataset_sampler=c.multi_dataset_sampler,
        )

    def epoch_float(self, step: int) -> float:
        return step / self.steps_per_epoch


def train(
    config: TrainConfig,
    evaluators: Sequence[Evaluator] = (),
    resume: bool = False,
    show_progress: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Run ``config`` and write the model, its card and its loss plot to ``config.output_dir``.

    ``on_step(step, loss)`` is called after each optimizer step (1-based step; benchmarks time it).
    """
    world = dist.init_from_env(config.device)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world.enabled:
        device = torch.device("cuda", world.local_rank)
    seed_everything(config.seed)
    datasets = load_all(config.data, config.data_split, config.skip_invalid)
    start = _latest(config) if resume else None
    encoder = SentenceEncoder.load(start / ckpt.MODEL_DIR if start else config.base_model, device=device)
    encoder.max_seq_length = config.max_seq_length
    # CPU training kernels: same maths and dropout distribution, ~1.3x faster steps (benchmarks/train.py)
    if use_chunked_attention(encoder.transformer.model) and device.type == "cpu":
        logger.info("attention with dropout runs in cache-sized chunks (biencoder.modules.attention)")
    use_parallel_dropout(encoder)
    tokenized = tokenize_datasets(encoder.transformer, datasets)
    rows = None
    if config.batch_sampler == "no_duplicates":
        rows = [[d.row(i) for i in range(len(d))] for d in datasets]
    plan = Plan(config, [len(d) for d in datasets], world, rows)
    dist.broadcast_parameters(encoder)
    optimizer = make_optimizer(config, encoder)
    gather = config.gather_across_devices and world.enabled
    objectives = build_objectives(config, encoder, datasets, gather, show_progress)
    state = ckpt.TrainState()
    if start is not None:
        payload = ckpt.load_checkpoint(start)
        optimizer.load_state_dict(payload["optimizer"])
        state = ckpt.restore_state(payload)
        rngs = payload["rng"]
        ckpt.set_rng_state(rngs[world.rank] if len(rngs) == world.world_size else rngs[0])
        logger.info("resumed from %s at step %d of %d", start, state.step, plan.total)
    elif resume:
        logger.warning("--resume: no checkpoint in %s; starting from the beginning", config.checkpoints)
    dev = selection.dev_evaluator(config, show_progress)
    evaluators = [dev, *evaluators] if dev is not None else list(evaluators)
    keep = (
        selection.KeepBest(config.keep_best, config.checkpoints / selection.BEST_DIR, dev)
        if config.keep_best
        else None
    )
    _run(
        config,
        encoder,
        tokenized,
        plan,
        optimizer,
        objectives,
        state,
        evaluators,
        world,
        show_progress,
        on_step,
        keep,
    )
    elapsed = state.seconds
    if world.is_main:
        if keep is not None:
            keep.restore(state, encoder)
        write_output(config, encoder, datasets, tokenized, state, objectives, evaluators)
    dist.barrier()
    return TrainResult(
        output_dir=Path(config.output_dir),
        log_history=state.log_history,
        eval_history=state.eval_history,
        seconds=elapsed,
        global_step=state.step,
        step_losses=state.step_losses,
        pairs_seen=state.step * config.batch_size * world.world_size,
        best_step=state.best_step,
        best_metric=state.best_metric,
    )


def _latest(config: TrainConfig) -> Path | None:
    ckpt.clean_partial(config.checkpoints)
    found = ckpt.list_checkpoints(config.checkpoints)
    return found[-1] if found else None


def _progress(plan: Plan, state: ckpt.TrainState, show: bool | None, world: dist.DistInfo) -> Progress:
    """A bar in a terminal, else a log line every 30 s (step, loss, s/step, time left); main process only."""
    if not world.is_main:
        return Progress(plan.total, "Training", initial=state.step, show=False, interval=math.inf)
    return Progress(plan.total, "Training", "step", initial=state.step, show=show)


def _run(
    config: TrainConfig,
    encoder: SentenceEncoder,
    data: list[TokenizedDataset],
    plan: Plan,
    optimizer: torch.optim.AdamW,
    objectives: list[Objective],
    state: ckpt.TrainState,
    evaluators: list[Evaluator],
    world: dist.DistInfo,
    show_progress: bool | None,
    on_step: Callable[[int, float], None] | None = None,
    keep: selection.KeepBest | None = None,
) -> None:
    step_fn = Step(config, encoder, optimizer, objectives, world, plan.total)
    started = time.perf_counter()
    seconds_before = state.seconds
    encoder.train()
    with _progress(plan, state, show_progress, world) as bar:
        for step in range(state.step, plan.total):
            batch = plan.batch(step)
            duplicates = duplicate_texts(data, batch)
            if duplicates:
                state.duplicate_batches += 1
                level = logging.INFO if state.duplicate_batches == 1 else logging.DEBUG
                logger.log(
                    level,
                    "step %d: the batch holds %d duplicate texts (false in-batch negatives)",
                    step + 1,
                    duplicates,
                )
            loss = step_fn(data, batch, step)
            state.step = step + 1
            state.step_losses.append(loss)
            state.interval_loss += loss
            state.interval_steps += 1
            if len(data) > 1:
                tally = state.interval_by_dataset.setdefault(data[batch.dataset].data.name, [0.0, 0])
                tally[0], tally[1] = tally[0] + loss, tally[1] + 1
            bar.set_postfix(loss=loss, epoch=f"{plan.epoch_float(state.step):.2f}")
            bar.update(1)
            if on_step is not None:
                on_step(state.step, loss)
            _after_step(
                config,
                encoder,
                optimizer,
                plan,
                state,
                evaluators,
                world,
                seconds_before + time.perf_counter() - started,
                keep,
            )
    state.seconds = seconds_before + time.perf_counter() - started
    if state.duplicate_batches:
        logger.info("%d of %d batches held duplicate texts", state.duplicate_batches, state.step)


def _after_step(
    config: TrainConfig,
    encoder: SentenceEncoder,
    optimizer: torch.optim.AdamW,
    plan: Plan,
    state: ckpt.TrainState,
    evaluators: list[Evaluator],
    world: dist.DistInfo,
    seconds: float,
    keep: selection.KeepBest | None = None,
) -> None:
    step, last = state.step, state.step == plan.total
    epoch = round(plan.epoch_float(step), 4)
    if step % config.logging_steps == 0 and state.interval_steps:
        row = {"epoch": epoch, "step": step, "loss": round(state.interval_loss / state.interval_steps, 4)}
        for name, (total, count) in sorted(state.interval_by_dataset.items()):
            row[f"{name}_loss"] = round(total / count, 4)
        state.log_history.append(row)
        state.interval_loss, state.interval_steps, state.interval_by_dataset = 0.0, 0, {}
        logger.info(
            "epoch %.4f step %d: %s",
            epoch,
            step,
            ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.endswith("loss")),
        )
    if evaluators and _evaluation_due(config, plan, step):
        row = {"epoch": epoch, "step": step, **evaluate(encoder, evaluators, world, config.eval_backend)}
        state.eval_history.append(row)
        if keep is not None:
            keep.update(state, row, encoder, world.is_main)
            dist.barrier()
        encoder.train()
    if step % config.save_steps == 0 or last:
        state.seconds = seconds
        rngs = dist.gather_objects(ckpt.rng_state())
        if world.is_main:
            ckpt.save_checkpoint(
                config.checkpoints,
                step,
                encoder,
                optimizer,
                state,
                rngs,
                config.to_dict(),
                config.save_total_limit,
            )
        dist.barrier()


def _evaluation_due(config: TrainConfig, plan: Plan, step: int) -> bool:
    """Every eval_steps; else, with a dev set, at each epoch's end; always at the last step."""
    if step == plan.total:
        return True
    if config.eval_steps:
        return step % config.eval_steps == 0
    return config.eval_data is not None and step % plan.steps_per_epoch == 0


def evaluate(
    encoder: SentenceEncoder, evaluators: Sequence[Evaluator], world: dist.DistInfo, backend: str = "torch"
) -> dict[str, float]:
    """Run every evaluator (on the main process) and prefix its metrics with its name.

    ``backend="onnx"``: the evaluators see an fp32 ONNX export of the current weights.
    """
    metrics: dict[str, float] = {}
    if world.is_main:
        encoder.eval()
        with contextlib.ExitStack() as stack:
            model: Any = encoder
            if backend == "onnx":
                from biencoder.runtime.graphs import onnx_twin

                model = stack.enter_context(onnx_twin(encoder))
            for evaluator in evaluators:
                for name, value in evaluator(model).items():
                    metrics[f"{evaluator.name}_{name}"] = float(value)
        logger.info("evaluation: %s", ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return dist.gather_objects(metrics)[0]
