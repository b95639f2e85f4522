"""The index folder: a versioned manifest, ids, vectors in .npy (memory-mapped on load), checked on load.

Layout (format version 1)::

    manifest.json     format, version, dim, count, dtype, metric, kind, quantization, model name,
                      config, and every other file with its size and sha256
    ids.json          the row ids, a JSON array of strings, row order
    alive.npy         bool [count]: False for removed rows (tombstones)
    vectors.npy       float32 [count, dim] (cosine: L2-normalised)
    codes.npy         int8 [count, dim] or packed bits uint8 [count, ceil(dim / 8)], if quantized
    int8_ranges.npy   float32 [2, dim], if int8
    hnsw.faiss        the HNSW graph (faiss), if kind is hnsw
    texts.json        each row's text (null where none), if rows were added with texts
    lexical/          the BM25 part, if the index has one (see biencoder.index.lexical)
    fusion.json       the tuned hybrid-search setting, if any; not listed in the manifest, so
                      that it can be rewritten alone (biencoder.index.persist.write_fusion_record)

The folder is written with :func:`biencoder.atomic.atomic_dir`: a write that dies midway leaves
the previous folder intact and no half-written folder under the final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = "biencoder-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class IndexFormatError(ValueError):
    """An index folder is missing, half-written, corrupted or of another version; names the file."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    dim: int
    count: int
    live: int
    metric: str
    kind: str
    quantization: str
    model_name: str | None
    config: dict[str, Any]
    files: dict[str, dict[str, Any]]
    dtype: str = "float32"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.dim < 1 or self.count < 0 or not 0 <= self.live <= self.count:
            raise IndexFormatError(
                f"manifest has impossible sizes: dim={self.dim} count={self.count} live={self.live}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "dim": self.dim,
            "count": self.count,
            "live": self.live,
            "dtype": self.dtype,
            "metric": self.metric,
            "kind": self.kind,
            "quantization": self.quantization,
            "model_name": self.model_name,
            "config": self.config,
            "files": self.files,
        }


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"bytes": (folder / n).stat().st_size, "sha256": file_digest(folder / n)} for n in names}


def write_manifest(folder: Path, manifest: Manifest) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


def read_manifest(folder: Path, verify: bool = False) -> Manifest:
    """Read and check ``folder/manifest.json`` and the files it lists; raise IndexFormatError if wrong."""
    if not folder.is_dir():
        raise FileNotFoundError(f"index folder not found: {folder}")
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexFormatError(
            f"{path} is missing: {folder} is not an index folder, or a half-written one "
            "(an interrupted `biencoder index` resumes from its .partial work folder)"
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: corrupted manifest, not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not a {FORMAT} manifest")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: format version {version!r}; this biencoder reads version {FORMAT_VERSION}"
        )
    try:
        manifest = Manifest(
            dim=int(raw["dim"]),
            count=int(raw["count"]),
            live=int(raw["live"]),
            metric=str(raw["metric"]),
            kind=str(raw["kind"]),
            quantization=str(raw["quantization"]),
            model_name=raw.get("model_name"),
            config=dict(raw.get("config", {})),
            files=dict(raw["files"]),
            dtype=str(raw.get("dtype", "float32")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: corrupted manifest, bad or missing field ({exc})") from None
    for name, info in manifest.files.items():
        fpath = folder / name
        if not fpath.is_file():
            raise IndexFormatError(f"{fpath} is missing: the index folder is incomplete")
        size = fpath.stat().st_size
        if size != info.get("bytes"):
            raise IndexFormatError(
                f"{fpath}: {size} bytes, the manifest says {info.get('bytes')}: truncated or corrupted"
            )
        if verify and file_digest(fpath) != info.get("sha256"):
            raise IndexFormatError(f"{fpath}: sha256 differs from the manifest: corrupted")
    return manifest


def save_array(folder: Path, name: str, array: np.ndarray) -> None:
    np.save(folder / name, np.ascontiguousarray(array), allow_pickle=False)


def load_array(
    folder: Path, name: str, shape: tuple[int, ...], dtype: np.dtype[Any] | type, mmap: bool
) -> np.ndarray:
    """np.load (memory-mapped when ``mmap``), checking the shape and dtype the manifest promises."""
    path = folder / name
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexFormatError(f"{path}: unreadable .npy ({exc})") from None
    if arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise IndexFormatError(
            f"{path}: holds {arr.dtype} {arr.shape}, the manifest expects {np.dtype(dtype)} {shape}"
        )
    return arr


def write_ids(folder: Path, ids: list[str]) -> None:
    (folder / "ids.json").write_text(json.dumps(ids, ensure_ascii=False))


def read_ids(folder: Path, count: int) -> list[str]:
    path = folder / "ids.json"
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: unreadable ids ({exc})") from None
    if not isinstance(ids, list) or len(ids) != count or not all(isinstance(i, str) for i in ids):
        n = len(ids) if isinstance(ids, list) else type(ids).__name__
        raise IndexFormatError(f"{path}: expected a list of {count} string ids, got {n}")
    return ids


TEXTS_FILE = "texts.json"


def write_texts(folder: Path, texts: list[str | None]) -> None:
    (folder / TEXTS_FILE).write_text(json.dumps(texts, ensure_ascii=False))


def read_texts(folder: Path, count: int) -> list[str | None]:
    """The stored text of every row (None where a row was added without one)."""
    path = folder / TEXTS_FILE
    try:
        texts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: unreadable texts ({exc})") from None
    if (
        not isinstance(texts, list)
        or len(texts) != count
        or not all(t is None or isinstance(t, str) for t in texts)
    ):
        n = len(texts) if isinstance(texts, list) else type(texts).__name__
        raise IndexFormatError(f"{path}: expected a list of {count} texts, got {n}")
    return texts
