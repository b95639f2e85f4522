"""MS MARCO passage ranking: collection + queries + qrels joined into one (query, passage) pair per qrel.

This is how the card's 532,761 training pairs arise from ``collection.tsv``,
``queries.train.tsv`` and ``qrels.train.tsv`` (``qid 0 pid 1`` per line). ``triples.train.small.tsv``
(query, positive, negative; no header) is a plain 3-column pair file read by
:func:`biencoder.data.pairs.read_pairs`.

A folder is recognised by a ``*collection*.tsv`` file; its queries file is the one whose name
contains ``queries`` (preferring the ``split`` named, ``train`` by default) and its qrels
file the one whose name contains ``qrel`` (TREC ``.tsv`` or a ``{qid: {pid: score}}`` ``.json``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from biencoder.data import DataFormatError
from biencoder.data.pairs import PairDataset, RowCollector
from biencoder.data.texts import read_json_object

logger = logging.getLogger(__name__)


def is_msmarco_folder(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*collection*.tsv"))


def _pick(folder: Path, patterns: tuple[str, ...], split: str, what: str) -> Path:
    found = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    if not found:
        raise FileNotFoundError(f"{folder}: no {what} file ({' or '.join(patterns)})")
    preferred = [p for p in found if split in p.name]
    if len(found) > 1 and not preferred:
        raise DataFormatError(
            f"{folder}: several {what} files {[p.name for p in found]} and none for {split!r}"
        )
    return (preferred or found)[0]


def read_id_text_tsv(path: Path) -> dict[str, str]:
    """``id \\t text`` lines; a repeated id keeps its first text (the repeat is counted and logged)."""
    texts: dict[str, str] = {}
    repeats = 0
    with path.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row:
                continue
            if len(row) < 2:
                raise DataFormatError(f"{path}:{number}: expected 'id<TAB>text', found {len(row)} field(s)")
            if row[0] in texts:
                repeats += 1
                continue
            texts[row[0]] = row[1]
    if repeats:
        logger.warning("%s: %d repeated ids; the first text of each was kept", path, repeats)
    return texts


def read_msmarco_qrels(path: Path) -> list[tuple[int | str, str, str, int]]:
    """(line, query id, passage id, score) in file order, from TREC ``qid 0 pid score`` or JSON."""
    rows: list[tuple[int | str, str, str, int]] = []
    if path.suffix == ".json":
        data = read_json_object(path, expected="{query id: {passage id: score}}")
        for qid, docs in data.items():
            if not isinstance(docs, dict):
                raise DataFormatError(f"{path}: query {qid!r}: expected {{passage id: score}}")
            rows.extend((f"query {qid}", str(qid), str(pid), int(score)) for pid, score in docs.items())
        return rows
    with path.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row or (number == 1 and not row[-1].lstrip("-").isdigit()):
                continue
            if len(row) < 3:
                raise DataFormatError(f"{path}:{number}: expected 'qid 0 pid score', found {len(row)} fields")
            try:
                score = int(row[-1])
            except ValueError:
                raise DataFormatError(f"{path}:{number}: score {row[-1]!r} is not an integer") from None
            rows.append((number, row[0], row[-2], score))
    return rows


def read_msmarco_folder(folder: str | Path, split: str = "train", skip_invalid: bool = False) -> PairDataset:
    """One (query, passage) pair per qrel with score > 0, in qrels file order."""
    folder = Path(folder)
    collection_file = _pick(folder, ("*collection*.tsv",), split, "collection")
    queries_file = _pick(folder, ("*quer*.tsv",), split, "queries")
    qrels_file = _pick(folder, ("*qrel*.tsv", "*qrel*.json"), split, "qrels")
    logger.info("MS MARCO: %s + %s + %s", collection_file.name, queries_file.name, qrels_file.name)
    collection = read_id_text_tsv(collection_file)
    queries = read_id_text_tsv(queries_file)
    names = ["query", "passage"]
    collector = RowCollector(qrels_file, 2, skip_invalid)
    for line, qid, pid, score in read_msmarco_qrels(qrels_file):
        if score <= 0:
            continue
        if qid not in queries or pid not in collection:
            missing = (
                f"query {qid!r} is not in {queries_file.name}"
                if qid not in queries
                else (f"passage {pid!r} is not in {collection_file.name}")
            )
            if not skip_invalid:
                raise DataFormatError(f"{qrels_file}:{line}: {missing}")
            collector.skipped += 1
            continue
        collector.add(line, [queries[qid], collection[pid]], names)
    return collector.build(folder.name, names, str(folder))
