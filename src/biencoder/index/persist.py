"""Saving and loading the index folder (atomically, checked), and the Parquet export."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biencoder.atomic import atomic_dir, atomic_file
from biencoder.index import storage
from biencoder.index.config import IndexConfig
from biencoder.index.hnsw import Hnsw
from biencoder.index.storage import IndexFormatError, Manifest
from biencoder.protocol import Encoder

if TYPE_CHECKING:
    from biencoder.index.core import Index

logger = logging.getLogger(__name__)

HNSW_FILE = "hnsw.faiss"


def _write_blocks(path: Path, blocks: list[Any], shape: tuple[int, int], dtype: np.dtype[Any]) -> None:
    """Stream row blocks into one .npy without holding them all in memory."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    offset = 0
    for block in blocks:
        for s in range(0, len(block), 65_536):  # copy a memory-mapped block a slice at a time
            part = np.asarray(block[s : s + 65_536])
            out[offset + s : offset + s + len(part)] = part
        offset += len(block)
    out.flush()
    del out


def save_index(index: Index, path: Path) -> None:
    dim = index._need_dim()
    count = len(index._ids)
    with atomic_dir(path) as tmp:
        names = ["ids.json", "alive.npy", "vectors.npy"]
        storage.write_ids(tmp, index._ids)
        storage.save_array(tmp, "alive.npy", index._alive)
        _write_blocks(tmp / "vectors.npy", index._blocks, (count, dim), np.dtype(np.float32))
        if index._codes:
            width = index._codes[0].shape[1]
            _write_blocks(tmp / "codes.npy", index._codes, (count, width), index._codes[0].dtype)
            names.append("codes.npy")
        if index._ranges is not None:
            storage.save_array(tmp, "int8_ranges.npy", index._ranges)
            names.append("int8_ranges.npy")
        if index._hnsw is not None:
            index._hnsw.save(tmp / HNSW_FILE)
            names.append(HNSW_FILE)
        if index._texts is not None:
            storage.write_texts(tmp, index._texts)
            names.append(storage.TEXTS_FILE)
        c = index.config
        manifest = Manifest(
            dim=dim,
            count=count,
            live=len(index),
            metric=c.metric,
            kind=c.kind,
            quantization=c.quantization,
            model_name=index.model_name,
            config=c.to_dict(),
            files=storage.describe_files(tmp, names),
        )
        storage.write_manifest(tmp, manifest)  # last: a folder without it is never taken for whole
    logger.info("saved %s to %s", index, path)


def load_index(cls: type[Index], path: Path, *, encoder: Encoder | None, mmap: bool, verify: bool) -> Index:
    m = storage.read_manifest(path, verify=verify)
    try:
        config = IndexConfig.from_dict(m.config)
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path / storage.MANIFEST}: bad index config ({exc})") from None
    if (config.metric, config.kind, config.quantization) != (m.metric, m.kind, m.quantization):
        raise IndexFormatError(f"{path / storage.MANIFEST}: config disagrees with metric/kind/quantization")
    if encoder is not None and encoder.dimension != m.dim:
        raise ValueError(
            f"dimension mismatch: the index at {path} holds {m.dim}-dimensional vectors "
            f"(model {m.model_name!r}), the encoder gives {encoder.dimension}"
        )
    index = cls(m.dim, encoder=encoder, config=config, model_name=m.model_name)
    ids = storage.read_ids(path, m.count)
    alive = storage.load_array(path, "alive.npy", (m.count,), np.bool_, mmap=False).copy()
    if int(alive.sum()) != m.live:
        raise IndexFormatError(
            f"{path / 'alive.npy'}: {int(alive.sum())} live rows, the manifest says {m.live}"
        )
    vectors = storage.load_array(path, "vectors.npy", (m.count, m.dim), np.float32, mmap)
    index._blocks = [vectors] if m.count else []
    quant = config.quant
    if quant.value == "int8":
        index._ranges = np.array(storage.load_array(path, "int8_ranges.npy", (2, m.dim), np.float32, False))
        index._codes = [storage.load_array(path, "codes.npy", (m.count, m.dim), np.int8, mmap)]
    elif quant.value == "binary":
        index._codes = [storage.load_array(path, "codes.npy", (m.count, (m.dim + 7) // 8), np.uint8, mmap)]
    if config.kind == "hnsw" and m.count:
        index._hnsw = Hnsw.load(path / HNSW_FILE, config.similarity, quant)
        if len(index._hnsw) != m.count:
            raise IndexFormatError(
                f"{path / HNSW_FILE}: {len(index._hnsw)} rows, the manifest says {m.count}"
            )
    index._ids = ids
    index._alive = alive
    if storage.TEXTS_FILE in m.files:
        index._texts = storage.read_texts(path, m.count)
    index._row = {ids[p]: int(p) for p in np.flatnonzero(alive)}
    if len(index._row) != m.live:
        raise IndexFormatError(f"{path / 'ids.json'}: live ids are not unique")
    if encoder is not None and m.model_name and getattr(encoder, "name", None) not in (None, m.model_name):
        logger.warning("index %s was built with %s, searching with %s", path, m.model_name, encoder)
    return index


def export_parquet(index: Index, path: Path, *, batch_rows: int) -> None:
    """Live rows as Parquet: ``id`` (string) and ``vector`` (fixed_size_list<float32>[dim]), streamed."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("Parquet export needs pyarrow: pip install 'biencoder[data]'") from exc
    dim = index._need_dim()
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    live = np.flatnonzero(index._alive)
    with atomic_file(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for s in range(0, len(live), batch_rows):
            pos = live[s : s + batch_rows]
            from biencoder.index.scoring import gather_rows

            vecs = gather_rows(index._blocks, pos, dim)
            flat = pa.array(vecs.reshape(-1), type=pa.float32())
            table = pa.table(
                {
                    "id": pa.array([index._ids[p] for p in pos], pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                },
                schema=schema,
            )
            writer.write_table(table)
    logger.info("exported %d rows of dimension %d to %s", len(live), dim, path)
