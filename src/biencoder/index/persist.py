"""Saving and loading the index folder (atomically, checked), and the Parquet export.

These functions work on :class:`IndexRows`, the index's rows and settings as plain data:
``Index`` hands them over and is rebuilt from them, so this module never imports ``Index``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.atomic import atomic_dir, atomic_file
from biencoder.index import storage
from biencoder.index.config import FusionRecord, IndexConfig
from biencoder.index.hnsw import Hnsw
from biencoder.index.lexical import FOLDER as LEXICAL_FOLDER
from biencoder.index.lexical import LexicalIndex
from biencoder.index.scoring import gather_rows
from biencoder.index.storage import IndexFormatError, Manifest

logger = logging.getLogger(__name__)

HNSW_FILE = "hnsw.faiss"
# Not listed in the manifest, so that `biencoder tune-fusion` can rewrite it alone (write_fusion_record).
FUSION_FILE = "fusion.json"


@dataclass(slots=True)
class IndexRows:
    """Everything an index folder holds: rows in insertion order, dead ones included."""

    config: IndexConfig
    dim: int
    model_name: str | None
    ids: list[str]
    alive: NDArray[np.bool_]
    blocks: list[Any]  # float32 [m, dim] blocks
    codes: list[Any] = field(default_factory=list)  # int8 [m, dim] or packed bits, if quantized
    ranges: NDArray[np.float32] | None = None  # int8 [2, dim]
    hnsw: Hnsw | None = None
    texts: list[str | None] | None = None
    lexical: LexicalIndex | None = None
    fusion: FusionRecord | None = None

    @property
    def live(self) -> int:
        return int(self.alive.sum())


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


def save_index(rows: IndexRows, path: Path) -> None:
    dim, count = rows.dim, len(rows.ids)
    with atomic_dir(path) as tmp:
        names = ["ids.json", "alive.npy", "vectors.npy"]
        storage.write_ids(tmp, rows.ids)
        storage.save_array(tmp, "alive.npy", rows.alive)
        _write_blocks(tmp / "vectors.npy", rows.blocks, (count, dim), np.dtype(np.float32))
        if rows.codes:
            width = rows.codes[0].shape[1]
            _write_blocks(tmp / "codes.npy", rows.codes, (count, width), rows.codes[0].dtype)
            names.append("codes.npy")
        if rows.ranges is not None:
            storage.save_array(tmp, "int8_ranges.npy", rows.ranges)
            names.append("int8_ranges.npy")
        if rows.hnsw is not None:
            rows.hnsw.save(tmp / HNSW_FILE)
            names.append(HNSW_FILE)
        if rows.texts is not None:
            storage.write_texts(tmp, rows.texts)
            names.append(storage.TEXTS_FILE)
        if rows.lexical is not None:
            names.extend(rows.lexical.save(tmp))
        if rows.fusion is not None:
            _write_fusion(tmp / FUSION_FILE, rows.fusion)
        c = rows.config
        manifest = Manifest(
            dim=dim,
            count=count,
            live=rows.live,
            metric=c.metric,
            kind=c.kind,
            quantization=c.quantization,
            model_name=rows.model_name,
            config=c.to_dict(),
            files=storage.describe_files(tmp, names),
        )
        storage.write_manifest(tmp, manifest)  # last: a folder without it is never taken for whole
    logger.info("saved %d rows (%d live) to %s", count, rows.live, path)


def load_index(path: Path, *, mmap: bool, verify: bool) -> IndexRows:
    m = storage.read_manifest(path, verify=verify)
    try:
        config = IndexConfig.from_dict(m.config)
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path / storage.MANIFEST}: bad index config ({exc})") from None
    if (config.metric, config.kind, config.quantization) != (m.metric, m.kind, m.quantization):
        raise IndexFormatError(f"{path / storage.MANIFEST}: config disagrees with metric/kind/quantization")
    ids = storage.read_ids(path, m.count)
    alive = storage.load_array(path, "alive.npy", (m.count,), np.bool_, mmap=False).copy()
    if int(alive.sum()) != m.live:
        raise IndexFormatError(
            f"{path / 'alive.npy'}: {int(alive.sum())} live rows, the manifest says {m.live}"
        )
    vectors = storage.load_array(path, "vectors.npy", (m.count, m.dim), np.float32, mmap)
    rows = IndexRows(
        config=config,
        dim=m.dim,
        model_name=m.model_name,
        ids=ids,
        alive=alive,
        blocks=[vectors] if m.count else [],
    )
    quant = config.quant
    if quant.value == "int8":
        rows.ranges = np.array(storage.load_array(path, "int8_ranges.npy", (2, m.dim), np.float32, False))
        rows.codes = [storage.load_array(path, "codes.npy", (m.count, m.dim), np.int8, mmap)]
    elif quant.value == "binary":
        rows.codes = [storage.load_array(path, "codes.npy", (m.count, (m.dim + 7) // 8), np.uint8, mmap)]
    if config.kind == "hnsw" and m.count:
        rows.hnsw = Hnsw.load(path / HNSW_FILE, config.similarity, quant)
        if len(rows.hnsw) != m.count:
            raise IndexFormatError(f"{path / HNSW_FILE}: {len(rows.hnsw)} rows, the manifest says {m.count}")
    if storage.TEXTS_FILE in m.files:
        rows.texts = storage.read_texts(path, m.count)
    if f"{LEXICAL_FOLDER}/config.json" in m.files:
        rows.lexical = LexicalIndex.load(path, alive, mmap=mmap)
    rows.fusion = read_fusion_record(path)
    live_ids = {ids[p] for p in np.flatnonzero(alive)}
    if len(live_ids) != m.live:
        raise IndexFormatError(f"{path / 'ids.json'}: live ids are not unique")
    return rows


def _write_fusion(path: Path, record: FusionRecord) -> None:
    path.write_text(json.dumps(record.to_dict(), indent=2) + "\n")


def read_fusion_record(folder: str | Path) -> FusionRecord | None:
    """The fusion setting of a store folder (``fusion.json``: tuned or chosen), None if it has none."""
    path = Path(folder) / FUSION_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return FusionRecord.from_dict(raw)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: bad fusion record ({exc})") from None


def write_fusion_file(folder: str | Path, record: FusionRecord | None) -> None:
    """``fusion.json`` in ``folder`` rewritten alone, atomically (None: removed); any store folder."""
    path = Path(folder) / FUSION_FILE
    if record is None:
        path.unlink(missing_ok=True)
        return
    with atomic_file(path) as tmp:
        _write_fusion(tmp, record)


def write_fusion_record(folder: str | Path, record: FusionRecord) -> None:
    """Set the fusion of an existing index folder: rewrites ``fusion.json`` alone, atomically."""
    folder = Path(folder)
    storage.read_manifest(folder)  # an index folder, whole
    write_fusion_file(folder, record)
    logger.info(
        "fusion alpha %.3f (%s, %s) recorded in %s", record.alpha, record.fusion, record.normalization, folder
    )


def export_parquet(rows: IndexRows, path: Path, *, batch_rows: int) -> None:
    """Live rows as Parquet: ``id`` (string) and ``vector`` (fixed_size_list<float32>[dim]), streamed."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("Parquet export needs pyarrow: pip install 'biencoder[data]'") from exc
    dim = rows.dim
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    live = np.flatnonzero(rows.alive)
    with atomic_file(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for s in range(0, len(live), batch_rows):
            pos = live[s : s + batch_rows]
            vecs = gather_rows(rows.blocks, pos, dim)
            flat = pa.array(vecs.reshape(-1), type=pa.float32())
            table = pa.table(
                {
                    "id": pa.array([rows.ids[p] for p in pos], pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                },
                schema=schema,
            )
            writer.write_table(table)
    logger.info("exported %d rows of dimension %d to %s", len(live), dim, path)
