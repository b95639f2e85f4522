"""Vector index: exact chunked search, HNSW, quantized vectors, the on-disk folder format."""

from __future__ import annotations
