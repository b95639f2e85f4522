"""The model card's uses: semantic search, paraphrase mining, clustering, classification.

Each function takes any :class:`~biencoder.protocol.Encoder` (PyTorch or ONNX) with texts, or
precomputed embeddings. scikit-learn (k-means, the classifier) is imported only when used.
"""

from __future__ import annotations

from biencoder.uses.classify import TextClassifier
from biencoder.uses.clustering import KMeansResult, community_detection, kmeans
from biencoder.uses.mining import paraphrase_mining
from biencoder.uses.search import semantic_search

__all__ = [
    "KMeansResult",
    "TextClassifier",
    "community_detection",
    "kmeans",
    "paraphrase_mining",
    "semantic_search",
]
