"""Vector index: exact chunked search, HNSW (faiss), int8/binary quantization, the on-disk folder,
and hybrid search (a BM25 lexical part fused with the dense side).

Needs only numpy (faiss for HNSW, pyarrow for the Parquet export, bm25s and PyStemmer for the
lexical part); never imports torch.
"""

from __future__ import annotations

from biencoder.index.config import FusionRecord, IndexConfig, IndexKind, SearchResult
from biencoder.index.core import Index
from biencoder.index.fusion import Fusion, ScoreNormalization, SearchMode
from biencoder.index.lexical import LexicalConfig
from biencoder.index.quantize import Quantization
from biencoder.index.storage import IndexFormatError

__all__ = [
    "Fusion",
    "FusionRecord",
    "Index",
    "IndexConfig",
    "IndexFormatError",
    "IndexKind",
    "LexicalConfig",
    "Quantization",
    "ScoreNormalization",
    "SearchMode",
    "SearchResult",
]
