"""The model card's uses: semantic search, paraphrase mining, clustering, classification.

Each function takes any :class:`~biencoder.protocol.Encoder` (PyTorch or ONNX) with texts, or
precomputed embeddings where that makes sense.
"""

from __future__ import annotations

from biencoder.uses.mining import paraphrase_mining

__all__ = ["paraphrase_mining"]
