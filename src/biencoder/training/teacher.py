"""A teacher's embeddings of a dataset's texts, the labels of MSELoss: computed once, kept on disk.

Self-distillation reads the same general texts in every epoch and every seed of a comparison, so
the teacher (the base model by default) encodes them once. A cache file is keyed by the teacher's
folder and weights (path, size, modification time), its ``max_seq_length`` and a hash of the texts,
and is written to a temporary name and renamed: a killed run leaves no half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from biencoder.atomic import atomic_file
from biencoder.data.pairs import PairDataset
from biencoder.encoder import SentenceEncoder
from biencoder.resolve import resolve_model_path

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_cache_dir() -> Path:
    """``$BIENCODER_CACHE/teacher``, else ``~/.cache/biencoder/teacher``."""
    root = os.environ.get("BIENCODER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "biencoder") / "teacher"


def teacher_key(teacher: str, max_seq_length: int, texts: Sequence[str]) -> str:
    """What the cached embeddings depend on, hashed: the teacher's files, its length, the texts."""
    folder = resolve_model_path(teacher).resolve()
    digest = hashlib.sha256(f"{folder}\n{max_seq_length}\n".encode())
    for weights in sorted(folder.rglob("*")):
        if weights.name in WEIGHT_FILES:
            stat = weights.stat()
            digest.update(f"{weights.relative_to(folder)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def teacher_embeddings(
    data: PairDataset,
    teacher: str,
    max_seq_length: int,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 64,
    show_progress: bool | None = None,
) -> NDArray[np.float32]:
    """[rows, columns, dim]: the teacher's embedding of every text of ``data``, each column's own."""
    columns = [data.column(c) for c in range(data.num_columns)]
    texts = [t for column in columns for t in column]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{teacher_key(teacher, max_seq_length, texts)}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
            if cached.shape[:2] == (len(data), data.num_columns):
                logger.info("%s: teacher embeddings of %s read from %s", data.name, teacher, path)
                return cached.astype(np.float32, copy=False)
        except (OSError, ValueError) as exc:
            logger.warning("%s: unreadable teacher cache (%s); encoding again", path, exc)
    model = SentenceEncoder.load(teacher, device=device)
    model.max_seq_length = max_seq_length
    unique = list(dict.fromkeys(texts))  # a text repeated across rows or columns is encoded once
    logger.info("%s: the teacher %s encodes %d distinct texts", data.name, teacher, len(unique))
    vectors = model.encode(unique, batch_size=batch_size, show_progress=show_progress)
    where = {t: i for i, t in enumerate(unique)}
    out = np.stack([vectors[[where[t] for t in column]] for column in columns], axis=1).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        np.save(f, out)
    return out
