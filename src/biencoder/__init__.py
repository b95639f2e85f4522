"""biencoder: train, evaluate, export and index sentence-embedding models.

The public names are imported lazily, so that the torch-free parts (the ONNX runtime, the
similarity functions, the index) never pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from biencoder.encoder import EncodeResult, SentenceEncoder
    from biencoder.index import Index, LexicalConfig
    from biencoder.loading import load_encoder
    from biencoder.protocol import Encoder
    from biencoder.runtime.onnx_encoder import OnnxEncoder

_LAZY = {
    "SentenceEncoder": "biencoder.encoder",
    "EncodeResult": "biencoder.encoder",
    "Encoder": "biencoder.protocol",
    "load_encoder": "biencoder.loading",
    "OnnxEncoder": "biencoder.runtime.onnx_encoder",
    "Index": "biencoder.index",
    "LexicalConfig": "biencoder.index",
}

__all__ = [
    "EncodeResult",
    "Encoder",
    "Index",
    "LexicalConfig",
    "OnnxEncoder",
    "SentenceEncoder",
    "__version__",
    "load_encoder",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biencoder' has no attribute {name!r}")
