"""Turn "an encoder and texts, or precomputed embeddings" into one float32 matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.protocol import Encoder
from biencoder.similarity import as_matrix


def is_encoder(obj: object) -> bool:
    return isinstance(obj, Encoder) and not isinstance(obj, np.ndarray)


def embed(
    encoder_or_embeddings: Encoder | Any,
    texts: Sequence[str] | None,
    *,
    batch_size: int = 32,
    show_progress: bool | None = None,
    name: str = "texts",
) -> NDArray[np.float32]:
    """Encode ``texts`` with an encoder, or check and return precomputed embeddings [n, dim]."""
    if is_encoder(encoder_or_embeddings):
        if texts is None:
            raise ValueError(f"{name} are required when an encoder is given")
        if isinstance(texts, str):
            raise TypeError(f"{name} must be a sequence of strings, not a single string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, encoder_or_embeddings.dimension), dtype=np.float32)
        return np.asarray(
            encoder_or_embeddings.encode(texts, batch_size=batch_size, show_progress=show_progress),
            dtype=np.float32,
        )
    if encoder_or_embeddings is None:
        raise TypeError("expected an encoder or an embeddings array, got None")
    emb = as_matrix(encoder_or_embeddings, f"embeddings of {name}")
    if texts is not None and len(texts) != emb.shape[0]:
        raise ValueError(f"got {len(texts)} {name} but {emb.shape[0]} embeddings")
    if not np.isfinite(emb).all():
        raise ValueError(f"embeddings of {name} contain NaN or infinite values")
    return emb
