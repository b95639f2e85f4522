"""The served model: either runtime, the ONNX graph exported once when the folder has none.

On CPU the default is the ONNX runtime in fp32 (its embeddings equal sentence-transformers' to
1e-5). A folder without ``onnx/model.onnx`` is exported on first start (``runtime.graphs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from biencoder.protocol import TokenEncoder
from biencoder.resolve import resolve_model_path
from biencoder.runtime.graphs import cache_root, ensure_onnx

__all__ = ["ServedModel", "cache_root", "ensure_onnx", "load_served_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServedModel:
    encoder: TokenEncoder
    folder: Path  # the folder the encoder was loaded from
    backend: str
    precision: str
    prompts: dict[str, str]


def load_served_model(
    model: str,
    backend: str = "onnx",
    precision: str = "fp32",
    device: str | None = None,
    threads: int | None = None,
) -> ServedModel:
    """Resolve ``model``, make sure the runtime's files exist, and load it."""
    folder = resolve_model_path(model)
    prompts = _prompts(folder)
    if backend == "torch":
        from biencoder.encoder import SentenceEncoder

        return ServedModel(SentenceEncoder.load(folder, device=device), folder, backend, precision, prompts)
    if backend != "onnx":
        raise ValueError(f"unknown backend {backend!r}; valid: onnx, torch")
    from biencoder.runtime.onnx_encoder import OnnxEncoder

    graph_folder = ensure_onnx(folder, precision)
    encoder = OnnxEncoder.load(graph_folder, precision=precision, threads=threads)
    return ServedModel(encoder, graph_folder, backend, precision, prompts)


def _prompts(folder: Path) -> dict[str, str]:
    """The prompts of ``config_sentence_transformers.json`` (name -> text prepended to inputs)."""
    from biencoder.runtime.tokenizer import read_json

    raw = read_json(folder / "config_sentence_transformers.json").get("prompts") or {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items() if isinstance(v, str)}
