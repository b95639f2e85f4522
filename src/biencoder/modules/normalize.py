"""L2 normalisation of the sentence embedding, so that dot product equals cosine similarity."""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn


class Normalize(nn.Module):
    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        features["sentence_embedding"] = F.normalize(features["sentence_embedding"], p=2, dim=1)
        return features

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def load(cls, path: Path) -> Normalize:
        return cls()

    def __repr__(self) -> str:
        return "Normalize()"
