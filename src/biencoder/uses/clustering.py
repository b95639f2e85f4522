"""Clustering: fast community detection (threshold clustering) and k-means."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from biencoder import similarity as sim
from biencoder.index.exact import check_chunk_size
from biencoder.protocol import Encoder
from biencoder.uses._inputs import embed

logger = logging.getLogger(__name__)


def community_detection(
    encoder_or_embeddings: Encoder | Any,
    texts: Sequence[str] | None = None,
    *,
    threshold: float = 0.75,
    min_community_size: int = 10,
    batch_size: int = 1024,
    encode_batch_size: int = 32,
    show_progress: bool | None = None,
) -> list[list[int]]:
    """Communities of rows whose cosine similarity to a central row is at least ``threshold``.

    Semantics of ``sentence_transformers.util.community_detection``: every row with at least
    ``min_community_size`` rows (itself included) at or above the threshold proposes a
    community; the largest proposals claim their rows first, overlaps are dropped, and what is
    left must still have ``min_community_size`` rows. Largest community first; the first row of
    each is its centre, the rest follow by decreasing similarity (ties: lower row first).
    ``batch_size`` rows are compared with all rows at once: memory is ``4 * batch_size * n`` bytes.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    check_chunk_size(min_community_size, "min_community_size")
    check_chunk_size(batch_size, "batch_size")
    emb = embed(encoder_or_embeddings, texts, batch_size=encode_batch_size, show_progress=show_progress)
    n = emb.shape[0]
    if n < min_community_size:
        return []
    emb = sim.normalize(emb)
    proposals: list[tuple[int, NDArray[np.int64]]] = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="Finding clusters", disable=not (show_progress and len(starts) > 1)):
        scores = emb[start : start + batch_size] @ emb.T  # [b, n]
        close = scores >= threshold
        for r in np.flatnonzero(close.sum(axis=1) >= min_community_size):
            members = np.flatnonzero(close[r])
            order = np.lexsort((members, -scores[r, members]))  # score descending, then row
            proposals.append((start + int(r), members[order]))
    proposals.sort(key=lambda p: len(p[1]), reverse=True)  # stable: equal sizes keep row order
    used = np.zeros(n, dtype=bool)
    communities: list[list[int]] = []
    for centre, members in proposals:
        if used[centre]:
            continue
        free = members[~used[members]]
        if len(free) >= min_community_size:
            community = [centre, *(int(m) for m in free if m != centre)]
            communities.append(community)
            used[community] = True
    communities.sort(key=len, reverse=True)
    return communities


@dataclass(frozen=True, slots=True)
class KMeansResult:
    labels: NDArray[np.int64]  # [n]
    centers: NDArray[np.float32]  # [n_clusters, dim]
    inertia: float


def kmeans(
    encoder_or_embeddings: Encoder | Any,
    texts: Sequence[str] | None = None,
    *,
    n_clusters: int,
    normalize: bool = True,
    seed: int = 0,
    n_init: int = 10,
    batch_size: int = 32,
    show_progress: bool | None = None,
) -> KMeansResult:
    """k-means (scikit-learn) on the embeddings, L2-normalised first unless ``normalize=False``."""
    check_chunk_size(n_clusters, "n_clusters")
    check_chunk_size(n_init, "n_init")
    try:
        from sklearn.cluster import KMeans
    except ImportError as exc:
        raise ImportError("k-means needs scikit-learn: pip install 'biencoder[eval]'") from exc
    emb = embed(encoder_or_embeddings, texts, batch_size=batch_size, show_progress=show_progress)
    if emb.shape[0] < n_clusters:
        raise ValueError(f"k-means needs at least n_clusters={n_clusters} rows, got {emb.shape[0]}")
    if normalize:
        emb = sim.normalize(emb)
    model = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(emb)
    return KMeansResult(
        labels=model.labels_.astype(np.int64),
        centers=model.cluster_centers_.astype(np.float32),
        inertia=float(model.inertia_),
    )
