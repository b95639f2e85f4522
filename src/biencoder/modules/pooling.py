"""Pooling: token embeddings [batch, seq, dim] -> one sentence embedding [batch, modes * dim].

Every mode sentence-transformers supports; several modes are concatenated in its fixed order.
Reads both config layouts (legacy ``pooling_mode_*`` booleans, whose modes concatenate in a fixed
order, and the newer ``pooling_mode`` list, in its own order). Writes the legacy layout, which every
sentence-transformers version loads, unless the modes' order needs the newer one.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from biencoder.modules.errors import ModelFolderError


class PoolingMode(StrEnum):
    CLS = "cls"
    MAX = "max"
    MEAN = "mean"
    MEAN_SQRT_LEN = "mean_sqrt_len_tokens"
    WEIGHTED_MEAN = "weightedmean"
    LAST_TOKEN = "lasttoken"


# The legacy config key of each mode, in the legacy layout's concatenation order.
_LEGACY_KEYS: dict[PoolingMode, str] = {
    PoolingMode.CLS: "pooling_mode_cls_token",
    PoolingMode.MAX: "pooling_mode_max_tokens",
    PoolingMode.MEAN: "pooling_mode_mean_tokens",
    PoolingMode.MEAN_SQRT_LEN: "pooling_mode_mean_sqrt_len_tokens",
    PoolingMode.WEIGHTED_MEAN: "pooling_mode_weightedmean_tokens",
    PoolingMode.LAST_TOKEN: "pooling_mode_lasttoken",
}


def _parse_modes(modes: str | PoolingMode | list[str] | tuple[str, ...]) -> tuple[PoolingMode, ...]:
    items = [modes] if isinstance(modes, str) else list(modes)
    if not items:
        raise ValueError("pooling needs at least one mode")
    parsed = []
    for item in items:
        try:
            parsed.append(PoolingMode(item))
        except ValueError:
            valid = ", ".join(m.value for m in PoolingMode)
            raise ValueError(f"unknown pooling mode {item!r}; valid: {valid}") from None
    return tuple(dict.fromkeys(parsed))  # concatenated in the order given


class Pooling(nn.Module):
    config_file = "config.json"

    def __init__(
        self,
        dimension: int,
        modes: str | PoolingMode | list[str] | tuple[str, ...] = PoolingMode.MEAN,
        include_prompt: bool = True,
    ) -> None:
        super().__init__()
        if dimension <= 0:
            raise ValueError(f"pooling dimension must be positive, got {dimension}")
        self.dimension = dimension
        self.modes = _parse_modes(modes)
        self.include_prompt = include_prompt

    @property
    def output_dimension(self) -> int:
        return self.dimension * len(self.modes)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = features["token_embeddings"]  # [b, s, d]
        mask = features["attention_mask"]  # [b, s]
        prompt_length = features.get("prompt_length")
        if not self.include_prompt and prompt_length is not None:
            mask = mask.clone()
            mask[:, : int(prompt_length)] = 0
        features["sentence_embedding"] = torch.cat([self._pool(m, tokens, mask) for m in self.modes], dim=-1)
        return features

    @staticmethod
    def _pool(mode: PoolingMode, tokens: Tensor, mask: Tensor) -> Tensor:
        acc = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
        if mode is PoolingMode.CLS:
            first = mask.to(torch.int).argmax(dim=1)  # first attended position (handles left padding)
            return tokens[torch.arange(tokens.shape[0], device=tokens.device), first]
        if mode is PoolingMode.MAX:
            m = mask.unsqueeze(-1).to(tokens.dtype)
            return tokens.masked_fill(m == 0, float("-inf")).max(dim=1).values
        if mode in (PoolingMode.MEAN, PoolingMode.MEAN_SQRT_LEN):
            m = mask.unsqueeze(-1).to(tokens.dtype)  # [b, s, 1]
            summed = (tokens * m).sum(dim=1, dtype=acc)  # [b, d]
            count = torch.clamp(m.sum(dim=1, dtype=acc), min=1e-9)  # [b, 1]
            denom = count if mode is PoolingMode.MEAN else torch.sqrt(count)
            return (summed / denom).to(tokens.dtype)
        if mode is PoolingMode.WEIGHTED_MEAN:
            m = mask.unsqueeze(-1).to(acc)
            weights = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=acc).view(1, -1, 1)
            weights = weights - mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1)  # start at first token
            wm = m * weights
            summed = (tokens * wm).sum(dim=1)
            return (summed / torch.clamp(wm.sum(dim=1), min=1e-9)).to(tokens.dtype)
        # LAST_TOKEN: the last attended position (right padding) or the final one (left padding).
        seq_len = tokens.shape[1]
        values, idx = mask.flip(1).max(1)
        idx = torch.where(values == 0, seq_len - 1, idx)
        last = seq_len - idx - 1
        masked = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        return masked[torch.arange(tokens.shape[0], device=tokens.device), last]

    def config(self) -> dict[str, Any]:
        canonical = tuple(m for m in _LEGACY_KEYS if m in self.modes)
        if canonical != self.modes:
            modes = [m.value for m in self.modes]
            return {
                "embedding_dimension": self.dimension,
                "pooling_mode": modes,
                "include_prompt": self.include_prompt,
            }
        cfg: dict[str, Any] = {"word_embedding_dimension": self.dimension}
        for mode, key in _LEGACY_KEYS.items():
            cfg[key] = mode in self.modes
        cfg["include_prompt"] = self.include_prompt
        return cfg

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / self.config_file).write_text(json.dumps(self.config(), indent=4) + "\n")

    @classmethod
    def load(cls, path: Path) -> Pooling:
        file = path / cls.config_file
        try:
            cfg = json.loads(file.read_text())
        except FileNotFoundError:
            raise ModelFolderError(f"pooling config missing: {file}") from None
        except json.JSONDecodeError as exc:
            raise ModelFolderError(f"{file} is not valid JSON: {exc}") from None
        dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))
        if not isinstance(dim, int):
            raise ModelFolderError(f"{file}: no integer 'word_embedding_dimension'")
        modes: Any = cfg.get("pooling_mode")
        if modes is None:
            modes = [mode for mode, key in _LEGACY_KEYS.items() if cfg.get(key, False)] or [PoolingMode.MEAN]
        return cls(dim, modes, include_prompt=bool(cfg.get("include_prompt", True)))

    def __repr__(self) -> str:
        return f"Pooling({self.config()})"
