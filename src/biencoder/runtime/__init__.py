"""The torch-free CPU runtime: ONNX export and int8 (``export``, ``quantize``; these need torch),
and ``OnnxEncoder`` (onnxruntime + tokenizers + numpy only).

Names are imported lazily so that ``import biencoder.runtime`` pulls in nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biencoder.runtime.onnx_encoder import OnnxEncoder, RuntimeSettings
    from biencoder.runtime.tokenizer import TextTokenizer

_LAZY = {
    "OnnxEncoder": "biencoder.runtime.onnx_encoder",
    "RuntimeSettings": "biencoder.runtime.onnx_encoder",
    "TextTokenizer": "biencoder.runtime.tokenizer",
}

__all__ = ["OnnxEncoder", "RuntimeSettings", "TextTokenizer"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biencoder.runtime' has no attribute {name!r}")
