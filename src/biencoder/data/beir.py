"""The BEIR layout: corpus.jsonl, queries.jsonl and qrels/<split>.tsv (query-id, corpus-id, score)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from biencoder.data import DataFormatError
from biencoder.data.texts import read_jsonl


@dataclass(frozen=True)
class BeirDataset:
    corpus: dict[str, str]  # doc id -> "title text" (title and text joined by a space when both exist)
    queries: dict[str, str]  # query id -> text, only queries with judgements in the split
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> graded relevance


def doc_text(obj: dict[str, object]) -> str:
    """BEIR documents: title and text, joined with a space as sentence-transformers does."""
    title = obj.get("title") or ""
    text = obj.get("text") or ""
    return f"{title} {text}".strip() if title else str(text)


def load_corpus(path: str | Path) -> dict[str, str]:
    path = Path(path)
    corpus: dict[str, str] = {}
    for number, obj in read_jsonl(path):
        if "_id" not in obj:
            raise DataFormatError(f"{path}:{number}: missing '_id'")
        corpus[str(obj["_id"])] = doc_text(obj)
    return corpus


def load_queries(path: str | Path) -> dict[str, str]:
    path = Path(path)
    queries: dict[str, str] = {}
    for number, obj in read_jsonl(path):
        if "_id" not in obj or not isinstance(obj.get("text"), str):
            raise DataFormatError(f"{path}:{number}: expected '_id' and a string 'text'")
        queries[str(obj["_id"])] = str(obj["text"])
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """query id -> doc id -> relevance. A header line (query-id ...) is skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"qrels file not found: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or (number == 1 and not row[-1].lstrip("-").isdigit()):
                continue
            if len(row) < 3:
                raise DataFormatError(f"{path}:{number}: expected query-id, corpus-id, score")
            try:
                score = int(row[-1])
            except ValueError:
                raise DataFormatError(f"{path}:{number}: score {row[-1]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[-2]] = score
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Corpus, the queries judged in ``split``, and that split's qrels."""
    folder = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a BEIR folder: {name} is missing")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    all_queries = load_queries(folder / "queries.jsonl")
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise DataFormatError(f"{folder}: qrels name {len(missing)} unknown queries, e.g. {missing[0]!r}")
    queries = {q: all_queries[q] for q in qrels}
    return BeirDataset(corpus=load_corpus(folder / "corpus.jsonl"), queries=queries, qrels=qrels)
