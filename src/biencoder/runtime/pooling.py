"""The modules after the transformer, in numpy: Pooling, Dense and Normalize.

Read from the folder's ``modules.json`` directly (``biencoder.modules`` imports torch). The maths
is that of ``biencoder.modules`` (and sentence-transformers); tests compare the two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.runtime.tokenizer import ModelFolderError, read_json
from biencoder.similarity import normalize

logger = logging.getLogger(__name__)

Array = NDArray[np.float32]

# Concatenation order of the modes and their legacy config keys, as sentence-transformers has them.
POOLING_KEYS: dict[str, str] = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "torch.nn.modules.activation.Tanh": np.tanh,
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.ReLU": lambda x: np.maximum(x, 0),
    "torch.nn.modules.activation.Sigmoid": lambda x: (1.0 / (1.0 + np.exp(-x))).astype(np.float32),
}


def pool(mode: str, tokens: Array, mask: NDArray[np.int64]) -> Array:
    """One pooling mode: tokens [b, s, d] and mask [b, s] -> [b, d]."""
    b, s, _ = tokens.shape
    rows = np.arange(b)
    if mode == "cls":
        return tokens[rows, mask.argmax(axis=1)]  # first attended position (left padding too)
    m = mask[..., None].astype(np.float32)  # [b, s, 1]
    if mode == "max":
        return np.where(m > 0, tokens, -np.inf).max(axis=1).astype(np.float32)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        summed = np.einsum("bsd,bs->bd", tokens, m[..., 0])
        count = np.maximum(m.sum(axis=1), 1e-9)  # [b, 1]
        return summed / (count if mode == "mean" else np.sqrt(count))
    if mode == "weightedmean":
        weights = np.arange(1, s + 1, dtype=np.float32)[None, :] - mask.argmax(axis=1)[:, None]
        wm = m[..., 0] * weights  # [b, s]
        return np.einsum("bsd,bs->bd", tokens, wm) / np.maximum(wm.sum(axis=1, keepdims=True), 1e-9)
    if mode == "lasttoken":
        flipped = mask[:, ::-1]
        idx = np.where(flipped.max(axis=1) == 0, s - 1, flipped.argmax(axis=1))
        return (tokens * m)[rows, s - idx - 1]
    raise ValueError(f"unknown pooling mode {mode!r}; valid: {', '.join(POOLING_KEYS)}")


@dataclass(frozen=True, kw_only=True)
class Head:
    """Pooling modes, optional Dense layers and whether the output is L2-normalised."""

    modes: tuple[str, ...] = ("mean",)
    dimension: int = 0
    dense: tuple[tuple[Array, Array | None, str], ...] = field(default=())  # (weight [out, in], bias, act)
    normalize: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in POOLING_KEYS]
        if unknown or not self.modes:
            raise ValueError(f"pooling modes {list(self.modes)} invalid; valid: {', '.join(POOLING_KEYS)}")

    @property
    def output_dimension(self) -> int:
        dim = self.dimension * len(self.modes)
        return int(self.dense[-1][0].shape[0]) if self.dense else dim

    def __call__(self, tokens: Array, mask: NDArray[np.int64], normalize_output: bool | None = None) -> Array:
        """Token embeddings [b, s, d] -> sentence embeddings [b, out]."""
        tokens = tokens.astype(np.float32, copy=False)
        out = np.concatenate([pool(m, tokens, mask) for m in self.modes], axis=1)
        for weight, bias, activation in self.dense:
            out = out @ weight.T
            if bias is not None:
                out = out + bias
            out = _ACTIVATIONS[activation](out)
        do_norm = self.normalize if normalize_output is None else normalize_output
        return normalize(out) if do_norm else out.astype(np.float32, copy=False)


def load_head(folder: Path) -> Head:
    """The modules after the transformer, from ``modules.json`` (mean pooling when it is absent)."""
    file = folder / "modules.json"
    if not file.is_file():
        dim = read_json(folder / "config.json").get("hidden_size", 0)
        logger.warning("%s has no modules.json: mean pooling, no normalisation", folder)
        return Head(modes=("mean",), dimension=int(dim))
    entries = _read_modules(file)
    modes: tuple[str, ...] = ()
    dimension = 0
    dense: list[tuple[Array, Array | None, str]] = []
    norm = False
    for number, entry in enumerate(entries):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        sub = folder / str(entry.get("path", ""))
        if number == 0:
            if kind != "Transformer":
                raise ModelFolderError(f"{file}: the first module must be a Transformer, got {kind!r}")
        elif kind == "Pooling":
            modes, dimension = _read_pooling(sub / "config.json")
        elif kind == "Dense":
            dense.append(_read_dense(sub))
        elif kind == "Normalize":
            norm = True
        else:
            raise ModelFolderError(
                f"{file}: module {kind!r} is not supported by the ONNX runtime; "
                "supported: Pooling, Dense, Normalize"
            )
    if not modes:
        raise ModelFolderError(f"{file}: no Pooling module")
    return Head(modes=modes, dimension=dimension, dense=tuple(dense), normalize=norm)


def _read_modules(file: Path) -> list[dict[str, Any]]:
    import json

    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ModelFolderError(f"{file}: expected a list of module objects")
    return sorted(entries, key=lambda e: int(e.get("idx", 0)))


def _read_pooling(file: Path) -> tuple[tuple[str, ...], int]:
    cfg = read_json(file, required=True)
    dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))
    if not isinstance(dim, int):
        raise ModelFolderError(f"{file}: no integer 'word_embedding_dimension'")
    raw = cfg.get("pooling_mode")
    if raw is None:
        chosen = [mode for mode, key in POOLING_KEYS.items() if cfg.get(key, False)] or ["mean"]
    else:
        chosen = [raw] if isinstance(raw, str) else list(raw)
    unknown = [m for m in chosen if m not in POOLING_KEYS]
    if unknown:
        raise ModelFolderError(
            f"{file}: unknown pooling mode {unknown[0]!r}; valid: {', '.join(POOLING_KEYS)}"
        )
    order = list(POOLING_KEYS)
    return tuple(sorted(set(chosen), key=order.index)), dim


def _read_dense(folder: Path) -> tuple[Array, Array | None, str]:
    cfg = read_json(folder / "config.json", required=True)
    activation = str(cfg.get("activation_function") or "torch.nn.modules.activation.Tanh")
    if activation not in _ACTIVATIONS:
        raise ModelFolderError(
            f"{folder / 'config.json'}: Dense activation {activation!r} is not supported by the ONNX "
            "runtime; "
            f"supported: {', '.join(_ACTIVATIONS)}"
        )
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelFolderError(f"Dense weights missing: {weights}")
    from safetensors.numpy import load_file

    tensors = load_file(str(weights))
    weight = tensors.get("linear.weight")
    if weight is None:
        raise ModelFolderError(f"{weights}: no 'linear.weight' tensor")
    bias = tensors.get("linear.bias")
    return (
        weight.astype(np.float32),
        None if bias is None else bias.astype(np.float32),
        activation,
    )
