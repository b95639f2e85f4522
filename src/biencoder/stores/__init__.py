"""Vector stores behind one contract: the in-process ``Index``, LanceDB (embedded) and pgvector.

``open_store(folder)`` opens whichever backend wrote the folder. The database backends need
their extras (``pip install 'biencoder[stores]'``): lancedb; psycopg and pgvector.
"""

from __future__ import annotations

from biencoder.stores.contract import BACKENDS, StoreFormatError, StoreManifest, VectorStore
from biencoder.stores.folder import backend_of, model_name_of, open_store

__all__ = [
    "BACKENDS",
    "StoreFormatError",
    "StoreManifest",
    "VectorStore",
    "backend_of",
    "model_name_of",
    "open_store",
]
