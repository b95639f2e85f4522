"""Rows for mining and mined rows: (anchor, positive) pairs with their corpus in, n-tuples out.

``read_mining_input`` reads a pair file or a BEIR folder (whose qrels give every relevant
document of a query), ``write_rows`` writes .jsonl or .parquet atomically, in the column layout
``biencoder train`` reads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def read_mining_input(
    data: Path, split: str, corpus_file: str | None
) -> tuple[list[str], list[str], list[str] | None, dict[str, list[str]]]:
    """(anchors, positives, corpus or None, known positives by anchor text)."""
    from biencoder.data.beir import doc_text, load_beir
    from biencoder.data.pairs import read_pairs
    from biencoder.data.sources import read_beir_pairs

    known: dict[str, list[str]] = {}
    corpus: list[str] | None = None
    if data.is_dir():
        pairs = read_beir_pairs(data, split)
        beir = load_beir(data, split)
        corpus = list(beir.corpus.values())
        for qid, docs in beir.qrels.items():  # every relevant document of the query
            known[beir.queries[qid]] = [beir.corpus[d] for d, s in docs.items() if s > 0 and d in beir.corpus]
    else:
        pairs = read_pairs(data)
    if corpus_file is not None:
        path = Path(corpus_file)
        if not path.is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
        if path.suffix.lower() == ".jsonl":
            from biencoder.data.texts import read_jsonl

            corpus = [doc_text(obj) for _, obj in read_jsonl(path)]
        elif path.suffix.lower() == ".txt":
            from biencoder.data.texts import read_texts

            corpus = [t for t in read_texts(path) if t.strip()]
        else:
            raise ValueError(f"{path}: --corpus takes .txt (one text a line) or a BEIR corpus.jsonl")
    return list(pairs.anchors), list(pairs.positives), corpus, known


def write_rows(path: Path, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """JSONL (one object a row) or Parquet, written atomically."""
    from biencoder.atomic import atomic_file

    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"{path}: the output must be .jsonl or .parquet")
    with atomic_file(path) as tmp:
        if suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
            pq.write_table(table, str(tmp))
    logger.info("wrote %d rows to %s", len(rows), path)
