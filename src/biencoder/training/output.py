"""The output folder: the trained model, its README.md card and the training-loss plot."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biencoder.data.pairs import PairDataset
from biencoder.encoder import SentenceEncoder
from biencoder.evaluation.base import Evaluator
from biencoder.training.batches import TokenizedDataset
from biencoder.training.checkpoint import TrainState
from biencoder.training.config import TrainConfig
from biencoder.training.model_card import (
    CardInputs,
    DatasetCard,
    EvaluatorCard,
    render_card,
    token_stats,
    versions,
)
from biencoder.training.objectives import Objective
from biencoder.training.plots import plot_loss

logger = logging.getLogger(__name__)

PLOT_FILE = "training_loss.png"


def hyperparameters(config: TrainConfig, world_size: int = 1) -> dict[str, Any]:
    """The run's settings under transformers' TrainingArguments names, as the reference card lists them."""
    return {
        "eval_strategy": "steps" if config.eval_steps else ("epoch" if config.eval_data else "no"),
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "adam_beta1": config.adam_beta1,
        "adam_beta2": config.adam_beta2,
        "adam_epsilon": config.adam_epsilon,
        "max_grad_norm": int(config.max_grad_norm)
        if config.max_grad_norm == int(config.max_grad_norm)
        else config.max_grad_norm,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_ratio": config.warmup_ratio,
        "warmup_steps": config.warmup_steps,
        "logging_steps": config.logging_steps,
        "eval_steps": config.eval_steps,
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
        "bf16": config.precision == "bf16",
        "optim": "adamw_torch",
        "world_size": world_size,
        "batch_sampler": config.batch_sampler,
        "multi_dataset_batch_sampler": config.multi_dataset_sampler,
        "max_seq_length": config.max_seq_length,
        "load_best_model_at_end": config.keep_best is not None,
        "metric_for_best_model": config.keep_best,
    }


def architecture(encoder: SentenceEncoder) -> str:
    lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(encoder.layers)]
    return "SentenceTransformer(\n" + "\n".join(lines) + "\n)"


def widget(data: PairDataset, count: int = 5) -> list[dict[str, Any]]:
    """Up to ``count`` examples: an anchor, its positive and two other rows' positives."""
    n = len(data)
    out = []
    for i in range(min(count, n)):
        others = [data.positives[(i + k) % n] for k in (count, 2 * count) if n > 1]
        out.append({"source_sentence": data.anchors[i], "sentences": [data.positives[i], *others]})
    return out


def merged_log(state: TrainState) -> list[dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for row in [*state.log_history, *state.eval_history]:
        rows.setdefault(int(row["step"]), {}).update(row)
    return [rows[k] for k in sorted(rows)]


def write_output(
    config: TrainConfig,
    encoder: SentenceEncoder,
    datasets: Sequence[PairDataset],
    tokenized: Sequence[TokenizedDataset],
    state: TrainState,
    objectives: Sequence[Objective],
    evaluators: Sequence[Evaluator],
    world_size: int = 1,
) -> Path:
    """Write into ``config.output_dir``: each file is built aside and renamed in (checkpoints stay)."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the evaluation of the saved weights: the best one under keep_best, else the last
    saved = [r for r in state.eval_history if state.best_step is not None and r["step"] == state.best_step]
    final = saved[-1] if saved else (state.eval_history[-1] if state.eval_history else {})
    cards = [
        EvaluatorCard(
            e.name,
            type(e).__name__,
            e.primary_metric,
            {k.removeprefix(f"{e.name}_"): v for k, v in final.items() if k.startswith(f"{e.name}_")},
        )
        for e in evaluators
    ]
    used_datasets = any(Path(p).is_dir() and not (Path(p) / "corpus.jsonl").exists() for p in config.data)
    inputs = CardInputs(
        base_model=config.base_model,
        max_seq_length=encoder.max_seq_length,
        dimension=encoder.dimension,
        similarity=encoder.similarity_fn_name,
        architecture=architecture(encoder),
        datasets=[
            DatasetCard(
                d.name,
                len(d),
                d.columns,
                [token_stats(c.lengths) for c in t.columns],
                [d.row(i) for i in range(min(3, len(d)))],
                o.loss.card_name,
                o.card_params(),
            )
            for d, t, o in zip(datasets, tokenized, objectives, strict=True)
        ],
        loss_name=objectives[0].loss.card_name,
        loss_params=objectives[0].card_params(),
        hyperparameters=hyperparameters(config, world_size),
        log_rows=merged_log(state),
        widget=widget(datasets[0]),
        versions=versions(with_datasets=used_datasets),
        evaluators=cards,
        plot_file=PLOT_FILE if state.step_losses else None,
        best_step=state.best_step if config.keep_best else None,
    )
    staging = Path(tempfile.mkdtemp(prefix=".output.", suffix=".tmp", dir=out))
    try:
        encoder.save_to(staging)
        (staging / "README.md").write_text(render_card(inputs), encoding="utf-8")
        if state.step_losses:
            plot_loss(state.step_losses, state.log_history, staging / PLOT_FILE)
        for entry in staging.iterdir():
            target = out / entry.name
            if (target.is_dir() and not entry.is_dir()) or target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote the model, README.md and %s to %s", PLOT_FILE, out)
    return out
