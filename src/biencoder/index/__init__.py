"""Vector index: exact chunked search, HNSW (faiss), int8/binary quantization, the on-disk folder.

Needs only numpy (faiss for HNSW, pyarrow for the Parquet export); never imports torch.
"""

from __future__ import annotations

from biencoder.index.config import IndexConfig, IndexKind, SearchResult
from biencoder.index.core import Index
from biencoder.index.quantize import Quantization
from biencoder.index.storage import IndexFormatError

__all__ = ["Index", "IndexConfig", "IndexFormatError", "IndexKind", "Quantization", "SearchResult"]
