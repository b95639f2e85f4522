"""Checkpoints: model, optimizer, schedule position, RNG states, data position and logs, written atomically.

A checkpoint is the folder ``checkpoint-<step>``: ``model/`` (the sentence-transformers layout)
and ``state.pt``. It is written into a temporary folder and renamed into place, so a process
killed at any moment leaves only complete checkpoints (and perhaps a hidden temporary folder,
which is ignored and cleaned). Resuming restores everything, so the run continues bit-identically.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biencoder.atomic import atomic_dir

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MODEL_DIR = "model"
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainState:
    """Everything besides the weights that a resumed run needs to continue exactly."""

    step: int = 0
    log_history: list[dict[str, float]] = field(default_factory=list)
    eval_history: list[dict[str, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    interval_loss: float = 0.0  # sum of losses since the last log row
    interval_steps: int = 0
    interval_by_dataset: dict[str, list[float]] = field(default_factory=dict)  # name -> [loss sum, steps]
    duplicate_batches: int = 0
    seconds: float = 0.0  # training time before this process started
    best_step: int | None = None  # keep_best: the step of the best dev evaluation so far
    best_metric: float | None = None
    best_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    step: int,
    encoder: Any,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    rng_states: list[dict[str, Any]],
    config: dict[str, Any],
    keep: int | None,
) -> Path:
    """Write ``folder/checkpoint-<step>`` atomically, then drop all but the ``keep`` newest."""
    target = folder / f"checkpoint-{step}"
    with atomic_dir(target) as tmp:
        encoder.save_to(_mkdir(tmp / MODEL_DIR))
        payload = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "train_state": state.to_dict(),
            "rng": rng_states,
            "config": config,
        }
        torch.save(payload, tmp / STATE_FILE)
    logger.debug("saved %s", target)
    if keep is not None:
        for old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of an interrupted save are skipped)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file() and (p / MODEL_DIR).is_dir()]


def clean_partial(folder: Path) -> None:
    """Remove temporary folders left by a save that was killed."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith((".checkpoint-", ".best.")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    payload: dict[str, Any] = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    return payload


def restore_state(payload: dict[str, Any]) -> TrainState:
    return TrainState(**payload["train_state"])
