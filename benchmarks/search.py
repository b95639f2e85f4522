"""Search: exact search against numpy brute force, HNSW recall / latency / build time, quantization, memory.

Sections (all by default):
  real     SciFact and TREC DL19 (mini) with all-MiniLM-L6-v2 embeddings (cached in .cache/): the
           exact Index equals a numpy brute force; on SciFact also HNSW, int8 and binary recall@10.
  random   --n (1,000,000) random unit vectors of dim 384: HNSW recall@10 against exact search
           for an efSearch sweep, query latency p50, build time; int8 and binary with rescoring
           (recall@10 and scanned bytes). Two query sets: uniform random unit vectors (the
           literal task: neighbours barely stand out) and "planted" queries (a corpus row plus
           noise, cosine ~0.9 with it: neighbours stand out, as in real retrieval).
  memory   peak memory of exact search over the memory-mapped 1M x 384 index, one subprocess a
           configuration: tracemalloc peak (numpy's allocations) and the process's peak
           anonymous RSS, for several chunk sizes and corpus sizes.
  scaling  HNSW on --scaling-n (100,000) uniform random vectors for M 16 / 32 / 64: recall@10,
           share of the corpus visited and latency per efSearch, against exact search's latency.
  libraries  faiss against usearch HNSW on --lib-n random vectors (build time, recall, latency).

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/search.py [--sections real,random,memory]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / ".cache" / "search-bench"

from biencoder.index import Index, IndexConfig  # noqa: E402
from biencoder.similarity import normalize  # noqa: E402


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / |truth| over queries (rows of positions)."""
    return float(
        np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def p50_latency_ms(index: Index, queries: np.ndarray, k: int, **kw: Any) -> float:
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search_positions(q[None, :], k, **kw)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


# --- real data ------------------------------------------------------------------------------
def real_embeddings(name: str, folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    path = CACHE / f"{name}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return [str(i) for i in z["ids"]], z["corpus"], z["queries"]
    from biencoder.data.beir import load_beir
    from biencoder.encoder import SentenceEncoder

    data = load_beir(folder, "test")
    model = SentenceEncoder.load("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    ids = list(data.corpus)
    start = time.perf_counter()
    corpus = model.encode([data.corpus[i] for i in ids], batch_size=64)
    queries = model.encode(list(data.queries.values()), batch_size=64)
    print(f"  encoded {name}: {len(ids)} docs, {len(queries)} queries in {time.perf_counter() - start:.0f}s")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.array(ids), corpus=corpus, queries=queries)
    return ids, corpus, queries


def exact_vs_brute(
    name: str, ids: list[str], corpus: np.ndarray, queries: np.ndarray, k: int = 10
) -> dict[str, Any]:
    index = Index(config=IndexConfig(chunk_size=1000, query_chunk_size=64))  # several chunks
    index.add(ids, corpus)
    result = index.search(queries, k)
    scores = normalize(queries) @ normalize(corpus).T  # the brute force reference
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ref_ids = [[ids[j] for j in row] for row in order]
    ref_scores = np.take_along_axis(scores, order, axis=1)
    same = sum(
        a == b for ra, rb in zip(result.ids, ref_ids, strict=True) for a, b in zip(ra, rb, strict=True)
    )
    untied_diff = 0
    for q, (ra, rb) in enumerate(zip(result.ids, ref_ids, strict=True)):
        for r, (a, b) in enumerate(zip(ra, rb, strict=True)):
            # a differing id is fine only where the two are tied (equal scores at that rank)
            if a != b and not np.isclose(ref_scores[q, r], result.scores[q][r], atol=1e-6):
                untied_diff += 1
    max_err = float(np.abs(np.array(result.scores) - ref_scores).max())
    out = {
        "queries": len(queries),
        "docs": len(ids),
        "same_id_positions": f"{same}/{len(queries) * k}",
        "differing_untied_positions": untied_diff,
        "max_score_abs_diff": max_err,
    }
    print(f"  {name}: exact Index vs numpy brute force: {out}")
    return out


def variants_on(
    name: str, ids: list[str], corpus: np.ndarray, queries: np.ndarray, k: int = 10
) -> dict[str, Any]:
    exact = Index()
    exact.add(ids, corpus)
    _, truth = exact.search_positions(normalize(queries), k)
    out: dict[str, Any] = {}
    for label, cfg in [
        ("hnsw", IndexConfig(kind="hnsw")),
        ("int8+rescore", IndexConfig(quantization="int8")),
        ("binary+rescore", IndexConfig(quantization="binary")),
        ("hnsw-int8+rescore", IndexConfig(kind="hnsw", quantization="int8")),
    ]:
        index = Index(config=cfg)
        start = time.perf_counter()
        index.add(ids, corpus)
        build = time.perf_counter() - start
        q = normalize(queries)
        _, found = index.search_positions(q, k)
        mem = index.memory_bytes()
        out[label] = {
            "recall@10": recall_at(found, truth),
            "build_s": round(build, 2),
            "p50_ms": round(p50_latency_ms(index, q[:200], k), 3),
            "scanned_bytes_vs_float32": (mem["codes"] / mem["float32"]) if mem["codes"] else 1.0,
        }
        print(f"  {name} {label}: {out[label]}")
    out["exact_p50_ms"] = round(p50_latency_ms(exact, normalize(queries)[:200], k), 3)
    return out


def section_real() -> dict[str, Any]:
    print("== real data: SciFact, TREC DL19 (mini)")
    results: dict[str, Any] = {}
    for name, folder in (("scifact", DATA / "scifact"), ("trec-dl19", DATA / "trec-dl19-mini")):
        if not folder.is_dir():
            print(f"  {folder} absent: skipped")
            continue
        ids, corpus, queries = real_embeddings(name, folder)
        results[name] = {"exact_vs_brute": exact_vs_brute(name, ids, corpus, queries)}
        if name == "scifact":
            results[name]["variants"] = variants_on(name, ids, corpus, queries)
    return results


# --- 1M random vectors ------------------------------------------------------------------------
def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        x = rng.standard_normal((min(100_000, n - s), dim), dtype=np.float32)
        out[s : s + len(x)] = normalize(x)
    return out


def random_index(n: int, dim: int) -> Path:
    path = CACHE / f"random-{n}x{dim}"
    if not (path / "manifest.json").is_file():
        start = time.perf_counter()
        x = unit_vectors(n, dim, seed=0)
        index = Index(dim, config=IndexConfig())
        index.add([str(i) for i in range(n)], x)
        index.save(path)
        print(f"  wrote {path} in {time.perf_counter() - start:.0f}s")
    return path


def query_sets(n: int, dim: int, count: int, corpus: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    uniform = unit_vectors(count, dim, seed=2)
    rows = np.asarray(corpus[np.sort(rng.choice(n, count, replace=False))])
    planted = normalize(rows + 0.5 / np.sqrt(dim) * rng.standard_normal(rows.shape).astype(np.float32))
    return {"uniform": uniform, "planted": planted}


def section_random(
    n: int, dim: int, count: int, efs: list[int], connectivity: int, ef_add: int, quantized: bool = True
) -> dict[str, Any]:
    print(f"== random: {n} unit vectors of dim {dim}, {count} queries a set")
    path = random_index(n, dim)
    exact = Index.load(path)
    corpus = exact._blocks[0]  # the memory-mapped float32 vectors
    qsets = query_sets(n, dim, count, corpus)
    results: dict[str, Any] = {"n": n, "dim": dim, "queries": count}
    truth = {}
    for name, q in qsets.items():
        start = time.perf_counter()
        _, truth[name] = exact.search_positions(q, 10)
        results[f"exact_{name}_s_per_{count}_queries"] = round(time.perf_counter() - start, 1)
    results["exact_p50_ms_one_query"] = round(p50_latency_ms(exact, qsets["uniform"][:20], 10), 1)
    print(f"  exact: {results}")

    for quant, mults in (("int8", (4,)), ("binary", (4, 10))) if quantized else ():
        index = Index(dim, config=IndexConfig(quantization=quant))
        for s in range(0, n, 100_000):
            index.add([str(i) for i in range(s, min(s + 100_000, n))], np.asarray(corpus[s : s + 100_000]))
        index._blocks = [corpus]  # rescoring reads the memory-mapped float32 rows, as after Index.load
        for m, mult in enumerate(mults):
            index.config = replace(index.config, rescore_multiplier=mult)
            row: dict[str, Any] = {"codes_bytes": index.memory_bytes()["codes"], "float32_bytes": n * dim * 4}
            for name, q in qsets.items():
                start = time.perf_counter()
                _, found = index.search_positions(q, 10)
                row[f"recall@10_{name}"] = round(recall_at(found, truth[name]), 4)
                row[f"{name}_s"] = round(time.perf_counter() - start, 1)
                if m == 0:
                    _, found = index.search_positions(q, 10, rescore=False)
                    row[f"recall@10_{name}_no_rescore"] = round(recall_at(found, truth[name]), 4)
            results[f"{quant}_rescore_x{mult}"] = row
            print(f"  {quant} rescore x{mult}: {row}")
        del index

    cfg = IndexConfig(kind="hnsw", connectivity=connectivity, expansion_add=ef_add)
    saved = CACHE / f"hnsw-{n}x{dim}-M{connectivity}-efc{ef_add}"  # reused: a sweep need not rebuild
    if (saved / "manifest.json").is_file():
        hnsw = Index.load(saved)
        build = float(json.loads(saved.with_name(saved.name + ".build.json").read_text()))
    else:
        hnsw = Index(dim, config=cfg)
        start = time.perf_counter()
        for s in range(0, n, 100_000):
            hnsw.add([str(i) for i in range(s, min(s + 100_000, n))], np.asarray(corpus[s : s + 100_000]))
        build = time.perf_counter() - start
        hnsw.save(saved)
        saved.with_name(saved.name + ".build.json").write_text(json.dumps(build))
        hnsw._blocks = [corpus]
    results["hnsw"] = {"M": connectivity, "efConstruction": ef_add, "build_s": round(build, 1), "sweep": []}
    print(f"  hnsw build (M={connectivity}, efConstruction={ef_add}): {build:.0f}s")
    import faiss

    for ef in efs:
        row = {"efSearch": ef}
        for name, q in qsets.items():
            faiss.cvar.hnsw_stats.reset()
            _, found = hnsw.search_positions(q, 10, expansion_search=ef)
            row[f"recall@10_{name}"] = round(recall_at(found, truth[name]), 4)
            row[f"visited_{name}"] = round(faiss.cvar.hnsw_stats.ndis / len(q) / n, 4)  # share of corpus
        row["p50_ms"] = round(p50_latency_ms(hnsw, qsets["uniform"][:200], 10, expansion_search=ef), 3)
        results["hnsw"]["sweep"].append(row)
        print(f"  hnsw {row}")
    return results


def section_scaling(n: int, dim: int, count: int = 200) -> list[dict[str, Any]]:
    """HNSW on uniform random vectors: what M and efSearch reach recall@10 0.98, at what share visited."""
    import faiss

    print(f"== scaling: HNSW on {n} random unit vectors of dim {dim}, {count} uniform queries")
    corpus = unit_vectors(n, dim, seed=7)
    queries = unit_vectors(count, dim, seed=8)
    exact = Index(dim)
    exact.add([str(i) for i in range(n)], corpus)
    _, truth = exact.search_positions(queries, 10)
    exact_ms = p50_latency_ms(exact, queries[:50], 10)
    print(f"  exact search p50 {exact_ms:.2f} ms")
    rows = []
    for connectivity, ef_add in ((16, 200), (32, 200), (64, 400)):
        hnsw = Index(dim, config=IndexConfig(kind="hnsw", connectivity=connectivity, expansion_add=ef_add))
        start = time.perf_counter()
        hnsw.add([str(i) for i in range(n)], corpus)
        build = time.perf_counter() - start
        for ef in (128, 512, 2048, 8192):
            faiss.cvar.hnsw_stats.reset()
            _, found = hnsw.search_positions(queries, 10, expansion_search=ef)
            row = {
                "M": connectivity,
                "efConstruction": ef_add,
                "build_s": round(build, 1),
                "efSearch": ef,
                "recall@10": round(recall_at(found, truth), 4),
                "visited": round(faiss.cvar.hnsw_stats.ndis / count / n, 4),
                "p50_ms": round(p50_latency_ms(hnsw, queries[:50], 10, expansion_search=ef), 2),
                "exact_p50_ms": round(exact_ms, 2),
            }
            rows.append(row)
            print(f"  {row}")
    return rows


# --- memory -----------------------------------------------------------------------------------
MEMORY_CHILD = r"""
import json, sys, tracemalloc, numpy as np
from biencoder.index.exact import chunked_top_k
path, n, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
corpus = np.load(path, mmap_mode="r")[:n]
q = np.random.default_rng(5).standard_normal((100, corpus.shape[1])).astype(np.float32)
def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
before = anon_kb()
tracemalloc.start()
peak_anon = before
for s in range(0, 100, 100):
    chunked_top_k(q, corpus, 10, corpus_chunk_size=chunk, query_chunk_size=100)
    peak_anon = max(peak_anon, anon_kb())
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"n": n, "chunk": chunk, "tracemalloc_peak_mb": round(peak / 2**20, 1),
                  "rss_anon_growth_mb": round((peak_anon - before) / 1024, 1)}))
"""


def section_memory(n: int, dim: int) -> list[dict[str, Any]]:
    print("== memory: exact search (100 queries, k=10) over the memory-mapped vectors, one process each")
    vectors = random_index(n, dim) / "vectors.npy"
    rows = []
    configs = [(n, 10_000), (n, 50_000), (n, 200_000), (n // 4, 50_000), (n // 2, 50_000)]
    for size, chunk in configs:
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(vectors), str(size), str(chunk)],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["scores_chunk_mb"] = round(100 * chunk * 4 / 2**20, 1)
        row["corpus_mb"] = round(size * dim * 4 / 2**20, 1)
        rows.append(row)
        print(f"  {row}")
    return rows


# --- libraries --------------------------------------------------------------------------------
def section_libraries(n: int, dim: int) -> dict[str, Any]:
    import faiss
    from usearch.index import Index as UIndex

    print(
        f"== libraries: faiss vs usearch HNSW, {n} random unit vectors of dim {dim}, M=16, efConstruction=128"
    )
    x = unit_vectors(n, dim, seed=0)
    q = unit_vectors(200, dim, seed=3)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    start = time.perf_counter()
    u = UIndex(ndim=dim, metric="ip", dtype="f32", connectivity=16, expansion_add=128)
    u.add(np.arange(n), x, threads=2)
    u_build = time.perf_counter() - start
    start = time.perf_counter()
    f = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    f.hnsw.efConstruction = 128
    f.add(x)
    f_build = time.perf_counter() - start
    out: dict[str, Any] = {
        "usearch_build_s": round(u_build, 1),
        "faiss_build_s": round(f_build, 1),
        "sweep": [],
    }
    for ef in (64, 256):
        u.expansion_search = ef
        f.hnsw.efSearch = ef
        t = time.perf_counter()
        uk = u.search(q, 10, threads=1).keys
        ut = (time.perf_counter() - t) / len(q) * 1000
        t = time.perf_counter()
        _, fk = f.search(q, 10)
        ft = (time.perf_counter() - t) / len(q) * 1000
        out["sweep"].append(
            {
                "ef": ef,
                "usearch_recall": recall_at(uk, truth),
                "faiss_recall": recall_at(fk, truth),
                "usearch_ms": round(ut, 3),
                "faiss_ms": round(ft, 3),
            }
        )
    print(f"  {out}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sections", default="real,random,memory", help="comma list of real,random,memory,scaling,libraries"
    )
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--ef", default="64,128,256,512,1024,2048,4096", help="HNSW efSearch values to sweep")
    p.add_argument("--connectivity", type=int, default=16, help="HNSW M for the random section")
    p.add_argument("--ef-add", type=int, default=128, help="HNSW efConstruction for the random section")
    p.add_argument("--lib-n", type=int, default=100_000)
    p.add_argument("--scaling-n", type=int, default=100_000, help="corpus size of the scaling section")
    p.add_argument("--hnsw-only", action="store_true", help="random section: skip int8 / binary")
    args = p.parse_args()
    sections = args.sections.split(",")
    results: dict[str, Any] = {}
    if "real" in sections:
        results["real"] = section_real()
    if "random" in sections:
        efs = [int(e) for e in args.ef.split(",")]
        results["random"] = section_random(
            args.n, args.dim, args.queries, efs, args.connectivity, args.ef_add, not args.hnsw_only
        )
    if "scaling" in sections:
        results["scaling"] = section_scaling(args.scaling_n, args.dim)
    if "memory" in sections:
        results["memory"] = section_memory(args.n, args.dim)
    if "libraries" in sections:
        results["libraries"] = section_libraries(args.lib_n, args.dim)
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"results-{'-'.join(sections)}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
