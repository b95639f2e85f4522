"""Training: the card's recipe as a frozen config, a readable loop, checkpoints, distributed, cards."""

from __future__ import annotations

from biencoder.training.config import TrainConfig
from biencoder.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
