"""``biencoder search``: query a store folder (any backend: the folder says which) with one query,
or a file of queries into JSONL."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from biencoder.data import DataFormatError

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("search", help="search an index folder", description=__doc__)
    p.add_argument("query", nargs="?", help="one query (prints its hits)")
    p.add_argument("--index", "-i", required=True, help="store folder written by `biencoder index`")
    p.add_argument("-k", "--top-k", dest="k", type=int, default=10, help="hits per query")
    p.add_argument("--queries", help="queries: .txt one a line (id: line number) or BEIR queries.jsonl")
    p.add_argument("--output", "-o", help="with --queries: JSONL, one line a query")
    p.add_argument("--model", "-m", help="query encoder (default: the model the index was built with)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--expansion-search", type=int, help="HNSW efSearch (default: the index's)")
    p.add_argument(
        "--no-rescore", action="store_true", help="quantized index, lancedb IVF: skip full-vector rescoring"
    )
    p.add_argument("--nprobes", type=int, help="lancedb IVF: partitions searched (default: the store's)")
    p.add_argument("--dsn", help="pgvector: PostgreSQL connection (default: $BIENCODER_PG_DSN)")
    p.add_argument("--json", action="store_true", help="print the single query's result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.encoder import SentenceEncoder
    from biencoder.stores import backend_of, model_name_of, open_store

    if (args.query is None) == (args.queries is None):
        raise ValueError("give either one query or --queries FILE")
    if args.queries is not None and args.output is None:
        raise ValueError("--queries needs --output OUT.jsonl")
    if args.k < 1:
        raise ValueError(f"-k must be positive, got {args.k}")
    path = Path(args.index)
    model_name = args.model or model_name_of(path)
    if not model_name:
        raise ValueError(f"{path}: the index records no model; pass --model")
    opts: dict[str, Any] = {"rescore": not args.no_rescore, "expansion_search": args.expansion_search}
    if args.nprobes is not None:
        if backend_of(path) != "lancedb":
            raise ValueError(f"--nprobes is for a lancedb store; {path} is {backend_of(path)}")
        opts["nprobes"] = args.nprobes
    encoder = SentenceEncoder.load(model_name, device=args.device)
    index = open_store(path, encoder=encoder, dsn=args.dsn)
    if args.query is not None:
        result = index.search([args.query], args.k, **opts)
        hits = _with_texts(index, result.hits(0))
        if args.json:
            print(json.dumps({"query": args.query, "hits": hits}, ensure_ascii=False))
        else:
            for rank, hit in enumerate(hits, start=1):
                text = f"  {hit['text'][:100]}" if hit.get("text") else ""
                print(f"{rank:>3}  {hit['score']:.4f}  {hit['id']}{text}")
        return 0
    qids, texts = read_queries(Path(args.queries))
    _search_file(index, encoder, qids, texts, Path(args.output), args.k, args.batch_size, opts)
    return 0


def _search_file(
    index: Any,
    encoder: Any,
    qids: list[str],
    texts: list[str],
    output: Path,
    k: int,
    batch_size: int,
    opts: dict[str, Any],
) -> None:
    from tqdm.auto import tqdm

    from biencoder.atomic import atomic_file

    step = max(batch_size * 32, 256)
    show = logger.isEnabledFor(logging.INFO) and sys.stderr.isatty()
    with atomic_file(output) as tmp, tmp.open("w", encoding="utf-8") as f:
        for start in tqdm(range(0, len(texts), step), desc="Searching", unit="chunk", disable=not show):
            batch = texts[start : start + step]
            vectors = encoder.encode(batch, batch_size=batch_size, show_progress=False) if batch else None
            result = index.search(vectors, k, **opts) if vectors is not None else None
            for n, text in enumerate(batch):
                hits = _with_texts(index, result.hits(n)) if result is not None else []
                line = {"query_id": qids[start + n], "query": text, "hits": hits}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    logger.info("wrote hits for %d queries to %s", len(texts), output)


def _with_texts(index: Any, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hits with the stored ``text`` of each, where the index keeps texts."""
    if index.has_texts:
        for hit, text in zip(hits, index.texts_of([h["id"] for h in hits]), strict=True):
            hit["text"] = text
    return hits


def read_queries(path: Path) -> tuple[list[str], list[str]]:
    """(query ids, texts): BEIR queries.jsonl (``_id``, ``text``), or .txt one a line (id: line number)."""
    from biencoder.data.beir import load_queries
    from biencoder.data.texts import read_texts

    if not path.is_file():
        raise FileNotFoundError(f"queries file not found: {path}")
    if path.suffix.lower() == ".jsonl":
        queries = load_queries(path)
        return list(queries), list(queries.values())
    if path.suffix.lower() != ".txt":
        raise DataFormatError(f"{path}: queries must be .txt (one a line) or BEIR queries.jsonl")
    pairs = [(str(n), t) for n, t in enumerate(read_texts(path), start=1) if t.strip()]
    return [p[0] for p in pairs], [p[1] for p in pairs]
