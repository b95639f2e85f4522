"""Open a store folder, whichever backend wrote it: ``manifest.json`` is the in-process index,
``store.json`` names a database backend (LanceDB or pgvector)."""

from __future__ import annotations

from pathlib import Path

from biencoder.index import storage
from biencoder.protocol import Encoder
from biencoder.stores.contract import STORE_FILE, StoreFormatError, StoreManifest, VectorStore


def backend_of(path: str | Path) -> str:
    """``memory``, ``lancedb`` or ``pgvector``: which backend wrote the folder."""
    path = Path(path)
    if (path / STORE_FILE).is_file():
        return StoreManifest.read(path).backend
    if (path / storage.MANIFEST).is_file():
        return "memory"
    if not path.exists():
        raise FileNotFoundError(f"index folder not found: {path}")
    raise StoreFormatError(
        f"{path}: neither {storage.MANIFEST} (an in-process index) nor {STORE_FILE} (a database store); "
        "is it a folder written by biencoder index?"
    )


def model_name_of(path: str | Path) -> str | None:
    """The model the folder's vectors were made with, as recorded at build time."""
    path = Path(path)
    if backend_of(path) == "memory":
        return storage.read_manifest(path).model_name
    return StoreManifest.read(path).model_name


def open_store(
    path: str | Path, *, encoder: Encoder | None = None, dsn: str | None = None, mmap: bool = True
) -> VectorStore:
    """The store in ``path``; ``encoder`` lets it take texts; ``dsn`` (or BIENCODER_PG_DSN) for pgvector."""
    backend = backend_of(path)
    if backend == "memory":
        from biencoder.index import Index

        return Index.load(path, encoder=encoder, mmap=mmap)
    if backend == "lancedb":
        from biencoder.stores.lance import LanceStore

        return LanceStore.open(path, encoder=encoder)
    from biencoder.stores.pgvector import PgVectorStore

    return PgVectorStore.open(path, dsn=dsn, encoder=encoder)
