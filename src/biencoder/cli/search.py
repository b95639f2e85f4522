"""``biencoder search``: query a store folder (any backend: the folder says which) with one query,
or a file of queries into JSONL.

``--mode`` dense, lexical (BM25, loads no model) or hybrid (both fused by ``--fusion`` convex or
rrf; convex weighs the dense side by ``--alpha``); the default is hybrid on an index built with
``--lexical``, else dense. Hybrid hits carry each side's score too; a query whose lexical side
found nothing (stop words only, say) gets a note.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biencoder.data import DataFormatError

if TYPE_CHECKING:
    from biencoder.index.config import SearchResult
    from biencoder.stores.contract import SearchPlan

logger = logging.getLogger(__name__)

# The values of biencoder.index.SearchMode and Fusion (a test keeps them equal), parsed in plan_search;
# spelled out so that building the parser imports nothing of the index.
MODES = ("dense", "lexical", "hybrid")
FUSIONS = ("convex", "rrf")


def _alpha(value: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        alpha = float("nan")
    if not 0.0 <= alpha <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {value!r}")
    return alpha


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


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
    p.add_argument(
        "--explain",
        action="store_true",
        help="say how the search ranks: the mode and, for hybrid, the fusion, where it came from "
        "(the flags, the index's fusion.json: chosen at build or tuned, or the library default) and why",
    )
    hybrid = p.add_argument_group("search modes (lexical and hybrid: an index built with --lexical)")
    hybrid.add_argument(
        "--mode", choices=MODES, help="default: hybrid where the index has a lexical part, else dense"
    )
    hybrid.add_argument(
        "--fusion",
        choices=FUSIONS,
        help="hybrid: how the lists merge (default: the tuned one, else convex)",
    )
    hybrid.add_argument(
        "--alpha",
        type=_alpha,
        metavar="W",
        help="hybrid, convex fusion: the dense side's weight in [0, 1], used as given "
        "(default: the tuned one, else the library's, adapted per query)",
    )
    hybrid.add_argument(
        "--candidates",
        type=_positive,
        metavar="N",
        help="hybrid: hits per side before fusion (default 1000)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.index.fusion import DEFAULT_CANDIDATES
    from biencoder.stores import backend_of, open_store
    from biencoder.stores.contract import plan_search

    if (args.query is None) == (args.queries is None):
        raise ValueError("give either one query or --queries FILE")
    if args.queries is not None and args.output is None:
        raise ValueError("--queries needs --output OUT.jsonl")
    if args.k < 1:
        raise ValueError(f"-k must be positive, got {args.k}")
    if args.query is not None and not args.query.strip():
        raise ValueError("the query is empty: give words to search for")
    path = Path(args.index)
    opts: dict[str, Any] = {"rescore": not args.no_rescore, "expansion_search": args.expansion_search}
    if args.nprobes is not None:
        if backend_of(path) != "lancedb":
            raise ValueError(f"--nprobes is for a lancedb store; {path} is {backend_of(path)}")
        opts["nprobes"] = args.nprobes
    store = open_store(path, dsn=args.dsn)
    plan = plan_search(
        store,
        k=args.k,
        mode=args.mode,
        fusion=args.fusion,
        alpha=args.alpha,
        candidates=args.candidates or DEFAULT_CANDIDATES,
    )
    if args.explain:
        print(explain(store, plan, args), file=sys.stderr)
    encoder = _load_encoder(args, path, store) if plan.encodes else None  # lexical: no model to load
    searcher = _Searcher(store, plan, encoder, args.k, opts, args.batch_size)
    if args.query is not None:
        result = searcher.search([args.query])
        _print_hits(args.query, searcher.hits(result, 0), _note(result, 0), as_json=args.json)
        return 0
    qids, texts = read_queries(Path(args.queries))
    empty = next((qid for qid, text in zip(qids, texts, strict=True) if not text.strip()), None)
    if empty is not None:
        raise DataFormatError(f"{args.queries}: query {empty!r} is empty")
    _search_file(searcher, qids, texts, Path(args.output))
    return 0


def explain(store: Any, plan: SearchPlan, args: argparse.Namespace) -> str:
    """How a search in ``plan`` ranks over ``store``: lines for a person, on stderr."""
    from biencoder.index.fusion import DEFAULT_CANDIDATES, SearchMode
    from biencoder.index.hybrid import SearchSettings
    from biencoder.stores.hybrid import database_settings

    if plan.mode is not SearchMode.HYBRID:
        side = "embeddings only" if plan.mode is SearchMode.DENSE else "BM25 / full-text only"
        return f"search: {plan.mode.value} ({side})"
    record = getattr(store, "fusion_record", None)
    choices: dict[str, Any] = {
        "k": args.k,
        "mode": plan.mode,
        "fusion": args.fusion,
        "alpha": args.alpha,
        "normalization": None,
        "candidates": args.candidates or DEFAULT_CANDIDATES,
        "adaptive": None,
        "has_lexical": True,
        "record": record,
    }
    if store.backend == "memory":  # each store's search resolves its settings so
        settings = SearchSettings.resolve(**choices)
    else:
        settings = database_settings(backend=store.backend, **choices)
    if settings.fusion.value == "rrf":
        how = "reciprocal rank fusion"
    else:
        how = (
            f"convex fusion, alpha {settings.alpha:g} ({settings.normalization.value} scores"
            f"{', adaptive per query' if settings.adaptive else ''})"
        )
    lines = [f"search: hybrid, {how}"]
    if args.fusion is not None or args.alpha is not None:
        lines.append("  from: the flags given (--fusion / --alpha)")
    elif record is None:
        lines.append("  from: the library default (the index records no fusion: fusion.json)")
    elif record.source == "chosen":
        evidence = record.evidence or {}
        lines.append(f"  from: the label-free decision made at build (fusion.json): {evidence.get('reason')}")
        mrr = evidence.get("mrr") or {}
        if mrr:
            best = sorted(mrr.items(), key=lambda item: -item[1])[:3]
            listed = ", ".join(f"{label} {value:.4f}" for label, value in best)
            lines.append(f"  probe MRR@10: dense {evidence.get('dense_mrr', 0.0):.4f}; best {listed}")
    else:
        scored = f", cross-validated score {record.cv_score:.4f}" if record.cv_score is not None else ""
        lines.append(
            f"  from: tune-fusion on judged queries (fusion.json: {record.data}, split {record.split}"
            f", {record.folds} folds{scored})"
        )
    return "\n".join(lines)


def _load_encoder(args: argparse.Namespace, path: Path, store: Any) -> Any:
    """The query encoder: ``--model``, else the model the store records; its dimension checked."""
    from biencoder.encoder import SentenceEncoder
    from biencoder.stores import model_name_of

    recorded = model_name_of(path)
    model_name = args.model or recorded
    if not model_name:
        raise ValueError(f"{path}: the index records no model; pass --model")
    # compared as `biencoder index` records a model folder: its resolved path
    named = str(Path(model_name).resolve()) if Path(model_name).is_dir() else model_name
    if recorded and named != recorded:
        logger.warning("%s was built with %s, searching with %s", path, recorded, model_name)
    encoder = SentenceEncoder.load(model_name, device=args.device)
    if store.dimension is not None and encoder.dimension != store.dimension:
        raise ValueError(
            f"dimension mismatch: the index at {path} holds {store.dimension}-dimensional vectors, "
            f"the encoder {model_name} gives {encoder.dimension}"
        )
    return encoder


@dataclass(frozen=True, slots=True)
class _Searcher:
    """One store searched in one planned mode: queries embedded (dense, hybrid; ``encoder``), words
    passed (lexical, hybrid), each hit with its stored text where the store keeps texts."""

    store: Any
    plan: SearchPlan
    encoder: Any  # None for lexical search
    k: int
    opts: dict[str, Any]
    batch_size: int

    def search(self, texts: list[str]) -> SearchResult:
        vectors = None
        if self.encoder is not None:
            vectors = self.encoder.encode(texts, batch_size=self.batch_size, show_progress=False)
        return self.plan.search(self.store, texts, vectors, self.k, **self.opts)

    def hits(self, result: SearchResult, n: int) -> list[dict[str, Any]]:
        return _with_texts(self.store, result.hits(n))


def _note(result: SearchResult, n: int) -> str | None:
    return result.notes[n] if result.notes is not None else None


def _print_hits(query: str, hits: list[dict[str, Any]], note: str | None, *, as_json: bool) -> None:
    """One query's hits on stdout (a note, if any, on stderr; in the JSON too)."""
    if note is not None:
        print(f"note: {note}", file=sys.stderr)
    if as_json:
        line: dict[str, Any] = {"query": query, "hits": hits}
        if note is not None:
            line["note"] = note
        print(json.dumps(line, ensure_ascii=False))
        return
    for rank, hit in enumerate(hits, start=1):
        sides = ""
        if "dense_score" in hit:
            sides = f"  (dense {_score(hit['dense_score'])}, lexical {_score(hit['lexical_score'])})"
        text = f"  {hit['text'][:100]}" if hit.get("text") else ""
        print(f"{rank:>3}  {hit['score']:.4f}{sides}  {hit['id']}{text}")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _search_file(searcher: _Searcher, qids: list[str], texts: list[str], output: Path) -> None:
    from biencoder.atomic import atomic_file
    from biencoder.progress import track

    step = max(searcher.batch_size * 32, 256)
    show = None if logger.isEnabledFor(logging.INFO) else False
    notes = 0
    with atomic_file(output) as tmp, tmp.open("w", encoding="utf-8") as f:
        for start in track(range(0, len(texts), step), "Searching", "chunk", show=show):
            batch = texts[start : start + step]
            result = searcher.search(batch)
            for n, text in enumerate(batch):
                line: dict[str, Any] = {"query_id": qids[start + n], "query": text}
                line["hits"] = searcher.hits(result, n)
                note = _note(result, n)
                if note is not None:
                    line["note"] = note
                    notes += 1
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    logger.info("wrote hits for %d queries to %s (%d with a note)", len(texts), output, notes)


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
