"""An encoder with fixed embeddings, and the same one dressed as a sentence-transformers model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from biencoder import similarity as sim


class TableEncoder:
    """Looks texts up in a table: the evaluators and the reference see identical embeddings."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.calls = 0

    @property
    def dimension(self) -> int:
        return len(next(iter(self.table.values())))

    @property
    def similarity_fn_name(self) -> str:
        return "cosine"

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        self.calls += 1
        items = [texts] if isinstance(texts, str) else list(texts)
        return np.stack([self.table[t] for t in items]).astype(np.float32)

    def similarity(self, a: Any, b: Any) -> np.ndarray:
        return sim.cosine(a, b)


class TableSTModel:
    """The same table behind the parts of SentenceTransformer that its evaluators call."""

    similarity_fn_name = "cosine"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def _encode(self, texts: Sequence[str], convert_to_tensor: bool = False, **_: Any) -> Any:
        import torch

        arr = np.stack([self.table[t] for t in texts]).astype(np.float32)
        return torch.from_numpy(arr) if convert_to_tensor else arr

    encode = encode_query = encode_document = _encode

    def similarity(self, a: Any, b: Any) -> Any:
        from sentence_transformers.util import cos_sim

        return cos_sim(a, b)
