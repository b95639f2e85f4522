"""Training pairs: (anchor, positive[, negative]) rows from .jsonl, .csv, .tsv and .parquet files.

Columns are chosen by name when the file names them (``anchor/positive[/negative]``,
``sentence_0/sentence_1[/sentence_2]``, ``query/passage[/negative]``, ``title/text``: a BEIR
``corpus.jsonl`` read as unlabelled in-domain pairs), otherwise the first two
or three columns are taken in order. A .tsv file has a header only when its first row holds
such names (MS MARCO's ``triples.train.small.tsv`` has none); a .csv file always has one.

A ``score`` (or ``label``) column holding numbers is read as each row's score, for losses that
learn from scored pairs (CoSENTLoss); the other losses ignore it. One whose first value is not a
number holds class labels (NLI's "entailment") and is not read.

A malformed row (too few fields, a missing column, an empty text, a score that is no number) raises a
:class:`DataFormatError` naming the file and line; with ``skip_invalid`` it is skipped instead
and counted, and the count is logged.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biencoder.data import DataFormatError
from biencoder.data.texts import numbered_lines

logger = logging.getLogger(__name__)

PAIR_SUFFIXES = (".jsonl", ".csv", ".tsv", ".parquet")

# Known column layouts, tried in order: (anchor, positive, optional negative).
COLUMN_SETS: tuple[tuple[str, str, str], ...] = (
    ("anchor", "positive", "negative"),
    ("sentence_0", "sentence_1", "sentence_2"),
    ("sentence1", "sentence2", "sentence3"),
    ("query", "passage", "negative"),
    ("query", "positive", "negative"),
    ("question", "answer", "negative"),
    ("title", "text", "negative"),  # a BEIR corpus.jsonl: each document's title against its body
)

SCORE_COLUMNS = ("score", "label")  # a row's similarity score, as sentence-transformers names it

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def score_column(columns: Sequence[str]) -> str | None:
    """The name of the score column among ``columns``, if there is one."""
    return next((c for c in SCORE_COLUMNS if c in columns), None)


@dataclass(frozen=True)
class PairDataset:
    """Aligned text columns of one training source; ``negatives`` is None for plain pairs, and
    ``more_negatives`` holds the columns after the first negative (n-tuples: negative_2 ...)."""

    name: str
    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None = None
    columns: tuple[str, ...] = ("sentence_0", "sentence_1")
    more_negatives: tuple[list[str], ...] = ()
    skipped: int = 0
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    scores: list[float] | None = None  # a score per row (scored pairs), else None

    def __post_init__(self) -> None:
        if len(self.anchors) != len(self.positives):
            raise ValueError(f"{self.name}: {len(self.anchors)} anchors but {len(self.positives)} positives")
        if self.negatives is not None and len(self.negatives) != len(self.anchors):
            raise ValueError(f"{self.name}: {len(self.anchors)} anchors but {len(self.negatives)} negatives")
        if self.more_negatives and self.negatives is None:
            raise ValueError(f"{self.name}: more negative columns but no first one")
        if any(len(c) != len(self.anchors) for c in self.more_negatives):
            raise ValueError(f"{self.name}: a negative column's length differs from the anchors'")
        if len(self.columns) != self.num_columns:
            raise ValueError(f"{self.name}: {self.num_columns} text columns but names {self.columns}")
        if self.scores is not None and len(self.scores) != len(self.anchors):
            raise ValueError(f"{self.name}: {len(self.anchors)} anchors but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.anchors)

    @property
    def num_columns(self) -> int:
        return 2 if self.negatives is None else 3 + len(self.more_negatives)

    def column(self, index: int) -> list[str]:
        cols = [self.anchors, self.positives] + ([self.negatives] if self.negatives is not None else [])
        return [*cols, *self.more_negatives][index]

    def row(self, index: int) -> tuple[str, ...]:
        return tuple(self.column(c)[index] for c in range(self.num_columns))


class RowCollector:
    """Accumulate validated rows; bad rows raise (file:line) or are counted when skipping."""

    def __init__(self, path: Path | str, width: int, skip_invalid: bool, scored: bool = False) -> None:
        self.path = path
        self.width = width
        self.skip_invalid = skip_invalid
        self.columns: list[list[str]] = [[] for _ in range(width)]
        self.scores: list[float] | None = [] if scored else None
        self.skipped = 0

    def add(
        self, line: int | str, values: Sequence[object], names: Sequence[str], score: object = None
    ) -> None:
        problem = None
        if len(values) < self.width:
            problem = f"expected {self.width} fields ({', '.join(names[: self.width])}), found {len(values)}"
        else:
            for name, value in zip(names, values[: self.width], strict=False):
                if value is None:
                    problem = f"column {name!r} is missing"
                elif not isinstance(value, str):
                    problem = f"column {name!r} is a {type(value).__name__}, not a string"
                elif not value.strip():
                    problem = f"column {name!r} is empty"
                if problem:
                    break
        value_of_score = 0.0
        if problem is None and self.scores is not None:
            value_of_score, problem = _parse_score(score)
            if problem is not None and not self.columns[0] and not self.skipped:
                self.scores, problem = None, None  # not numbers from the first row: class labels
        if problem is not None:
            if not self.skip_invalid:
                raise DataFormatError(f"{self.path}:{line}: {problem} (skip such rows with skip_invalid)")
            self.skipped += 1
            return
        for col, value in zip(self.columns, values, strict=False):
            col.append(str(value))
        if self.scores is not None:
            self.scores.append(value_of_score)

    def build(self, name: str, names: Sequence[str], source: str) -> PairDataset:
        if self.skipped:
            logger.warning("%s: skipped %d malformed rows", self.path, self.skipped)
        if not self.columns[0]:
            raise DataFormatError(f"{self.path}: no training pairs found")
        return PairDataset(
            name=name,
            anchors=self.columns[0],
            positives=self.columns[1],
            negatives=self.columns[2] if self.width >= 3 else None,
            more_negatives=tuple(self.columns[3:]),
            columns=tuple(names[: self.width]),
            skipped=self.skipped,
            source=source,
            scores=self.scores,
        )


def _parse_score(value: object) -> tuple[float, str | None]:
    """(the score, None) or (0, what is wrong with it)."""
    if isinstance(value, bool) or value is None:
        return 0.0, f"score {value!r} is not a number"
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0, f"score {value!r} is not a number"
    if not math.isfinite(number):
        return 0.0, f"score {value!r} is not finite"
    return number, None


def choose_columns(
    path: Path | str, columns: Sequence[str], text_columns: Sequence[str] | None = None
) -> list[str]:
    """The column names to read: a known layout (with ``negative_1`` .. ``negative_n`` as
    ``biencoder mine`` and sentence-transformers write n-tuples), else the first two or three."""
    present = set(columns)
    for anchor, positive, negative in COLUMN_SETS:
        if anchor in present and positive in present:
            if negative not in present and f"{negative}_1" in present:
                n = 1
                while f"{negative}_{n + 1}" in present:
                    n += 1
                return [anchor, positive, *(f"{negative}_{i}" for i in range(1, n + 1))]
            return [anchor, positive] + ([negative] if negative in present else [])
    usable = list(text_columns if text_columns is not None else columns)
    if len(usable) < 2:
        raise DataFormatError(
            f"{path}: need two text columns (anchor, positive), found {list(columns)}; "
            f"name them e.g. {', '.join(COLUMN_SETS[0][:2])}"
        )
    return usable[:3]


def read_pairs(path: str | Path, skip_invalid: bool = False) -> PairDataset:
    """Read a pair file (.jsonl, .csv, .tsv, .parquet)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, skip_invalid)
    if suffix in (".csv", ".tsv"):
        return _read_delimited(path, skip_invalid, suffix == ".tsv")
    if suffix == ".parquet":
        return _read_parquet(path, skip_invalid)
    raise DataFormatError(
        f"{path}: unsupported training file type {suffix!r}; expected {', '.join(PAIR_SUFFIXES)}"
    )


def _read_jsonl(path: Path, skip_invalid: bool) -> PairDataset:
    collector: RowCollector | None = None
    names: list[str] = []
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if collector is not None and skip_invalid:
                collector.skipped += 1
                continue
            raise DataFormatError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        if collector is None:
            names = choose_columns(path, [k for k in obj if k not in SCORE_COLUMNS])
            score_key = score_column(list(obj))
            collector = RowCollector(path, len(names), skip_invalid, scored=score_key is not None)
        collector.add(number, [obj.get(n) for n in names], names, obj.get(score_key) if score_key else None)
    if collector is None:
        raise DataFormatError(f"{path}: no training pairs found")
    return collector.build(path.stem, names, str(path))


def _is_header(row: Sequence[str]) -> bool:
    names = set(row)
    return any(a in names and p in names for a, p, _ in COLUMN_SETS)


def _read_delimited(path: Path, skip_invalid: bool, tab: bool) -> PairDataset:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if tab:
                reader: Iterable[list[str]] = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.reader(f)
            rows = iter(reader)
            first = next(rows, None)
            if first is None:
                raise DataFormatError(f"{path}: the file is empty")
            header = _is_header(first) or not tab
            score_at = None
            if header:
                names = choose_columns(path, [c for c in first if c not in SCORE_COLUMNS])
                indices = [first.index(n) for n in names]
                score_name = score_column(first)
                score_at = first.index(score_name) if score_name else None
            else:
                width = min(3, len(first))
                names = [f"sentence_{i}" for i in range(max(width, 2))]
                indices = list(range(len(names)))
            collector = RowCollector(path, len(names), skip_invalid, scored=score_at is not None)
            if not header:
                collector.add(1, first[: len(names)], names)
            for number, row in enumerate(rows, start=2):
                if not row:
                    continue
                line = getattr(reader, "line_num", number)
                values = [row[i] if i < len(row) else None for i in indices]
                if any(v is None for v in values):
                    values = values[: sum(v is not None for v in values)]
                score = None if score_at is None or score_at >= len(row) else row[score_at]
                collector.add(line, values, names, score)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise DataFormatError(f"{path}: malformed {'TSV' if tab else 'CSV'} ({exc})") from None
    return collector.build(path.stem, names, str(path))


def _read_parquet(path: Path, skip_invalid: bool) -> PairDataset:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("reading .parquet needs pyarrow: pip install 'biencoder[data]'") from exc
    table = pq.read_table(path)
    text_cols = [
        f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    names = choose_columns(path, table.column_names, text_cols)
    score_name = score_column(table.column_names)
    scores = table.column(score_name).to_pylist() if score_name else None
    columns = [table.column(n).to_pylist() for n in names]
    return rows_to_dataset(path, path.stem, names, columns, skip_invalid, scores)


def rows_to_dataset(
    path: Path | str,
    name: str,
    names: Sequence[str],
    columns: Sequence[Sequence[object]],
    skip_invalid: bool,
    scores: Sequence[object] | None = None,
) -> PairDataset:
    """Validate column-oriented data (parquet, a saved dataset); rows are numbered from 1."""
    collector = RowCollector(path, len(names), skip_invalid, scored=scores is not None)
    for index, values in enumerate(zip(*columns, strict=True), start=1):
        collector.add(f"row {index}", values, names, None if scores is None else scores[index - 1])
    return collector.build(name, names, str(path))
