"""Read a column of texts from .txt, .jsonl, .csv, .tsv or .parquet; write embeddings to .npy or .parquet."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.atomic import atomic_file
from biencoder.data import DataFormatError

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv", ".parquet")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline); a UTF-8 byte-order mark is dropped."""
    try:
        with path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, object) for each non-blank line; malformed JSON raises naming file:line."""
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def read_json_object(
    path: Path, error: type[Exception] = DataFormatError, expected: str = "a JSON object"
) -> dict[str, Any]:
    """The JSON object in ``path``; malformed JSON or another type raises ``error`` naming file:line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}, got {type(data).__name__}")
    return data


def read_texts(path: str | Path, field: str | None = None) -> list[str]:
    """Texts from a file: one a line (.txt), a field of each object (.jsonl), a column (.csv/.tsv/.parquet).

    ``field`` names the JSON field or table column; it defaults to ``text``, or to the only
    column of a one-column table.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line for _, line in numbered_lines(path)]
    if suffix == ".jsonl":
        key = field or "text"
        texts = []
        for number, obj in read_jsonl(path):
            value = obj.get(key)
            if not isinstance(value, str):
                what = "missing" if value is None else f"a {type(value).__name__}, not a string"
                raise DataFormatError(f"{path}:{number}: field {key!r} is {what}")
            texts.append(value)
        return texts
    if suffix in (".csv", ".tsv"):
        return _read_delimited(path, field, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return _read_parquet(path, field)
    raise DataFormatError(
        f"{path}: unsupported input type {suffix!r}; expected one of {', '.join(TEXT_SUFFIXES)}"
    )


def _pick_column(path: Path, columns: list[str], field: str | None) -> str:
    if field is not None:
        if field not in columns:
            raise DataFormatError(f"{path}: no column {field!r}; columns are {columns}")
        return field
    if "text" in columns:
        return "text"
    if len(columns) == 1:
        return columns[0]
    raise DataFormatError(
        f"{path}: {len(columns)} columns {columns} and none named 'text'; choose one with --column"
    )


def _read_delimited(path: Path, field: str | None, delimiter: str) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataFormatError(f"{path}: empty file, expected a header row")
        column = _pick_column(path, header, field)
        index = header.index(column)
        texts = []
        for row in reader:
            if index >= len(row):
                raise DataFormatError(f"{path}:{reader.line_num}: row has {len(row)} fields, no {column!r}")
            texts.append(row[index])
        return texts


def _read_parquet(path: Path, field: str | None) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading .parquet needs pyarrow: pip install 'biencoder[data]'") from None
    table = pq.read_table(path)
    column = _pick_column(path, table.column_names, field)
    values = table.column(column).to_pylist()
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise DataFormatError(f"{path}: row {i} of column {column!r} is {type(v).__name__}, not a string")
    return values


def write_embeddings(
    path: str | Path, embeddings: NDArray[np.float32], texts: list[str] | None = None
) -> None:
    """Write [n, dim] float32 to .npy, or to .parquet (columns ``text`` and ``embedding``), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise DataFormatError(f"{path}: unsupported output type {suffix!r}; expected .npy or .parquet")
    with atomic_file(path) as tmp:
        if suffix == ".npy":
            with tmp.open("wb") as f:
                np.save(f, embeddings)
        else:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise ImportError("writing .parquet needs pyarrow: pip install 'biencoder[data]'") from None
            dim = embeddings.shape[1]
            flat = pa.array(embeddings.reshape(-1), type=pa.float32())
            columns = {"embedding": pa.FixedSizeListArray.from_arrays(flat, dim)}
            if texts is not None:
                columns = {"text": pa.array(texts, type=pa.string()), **columns}
            pq.write_table(pa.table(columns), tmp)
