"""Hybrid search: quality of dense, BM25 and their fusion on every retrieval set with qrels, and speed.

Sections (all by default):
  quality  SciFact (train and test), TREC DL19-mini (test), WikiQA read as retrieval over its
           sentences (dev and test), with all-MiniLM-L6-v2 (or --model) through biencoder.Index
           with a lexical part: nDCG@10 of dense, BM25, RRF, the untuned default (calibrated,
           adaptive, alpha 0.7), convex min-max with alpha picked on the choosing split
           (SciFact train for SciFact, WikiQA dev for WikiQA; DL19 has only test, so it is
           reported, never chosen on), and, marked as an oracle, the best alpha on each split
           itself. Paired per-query randomisation test of the default hybrid against dense.
  speed    query latency p50 / p99 of dense and hybrid search on the memory backend, and the
           lexical index's build time: on SciFact's corpus, and on --n (1,000,000) synthetic
           passages (random words of a 30,000-word vocabulary, Zipf-distributed, 40-120 words)
           with random unit vectors. Target: hybrid p50 <= 2x dense p50.

  testbed  every corpus of the test bed (biencoder.evaluation.testbed: 8 corpora, a choose and a
           report split each): dense, BM25, RRF, the untuned default, the oracle, and the default
           an index now gets from the label-free fusion decision (benchmarks/hybrid_testbed.py).

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/hybrid.py [--sections quality,speed,testbed]

Embeddings are cached in --cache (.cache/hybrid-bench) by model and dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))

from biencoder.data.beir import doc_text, load_qrels, load_queries  # noqa: E402
from biencoder.evaluation.metrics import ndcg_at_k  # noqa: E402
from biencoder.evaluation.paired import randomisation_p_value  # noqa: E402
from biencoder.index import Index  # noqa: E402
from biencoder.index.lexical import LexicalConfig  # noqa: E402

GRID = [round(a, 1) for a in np.arange(0.0, 1.01, 0.1)]
Dataset = tuple[list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]


def beir(name: str, split: str) -> Dataset:
    """(doc ids, doc texts, query ids, query texts, qrels) of a BEIR folder's split."""
    folder = DATA / name
    ids, docs = [], []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["_id"])
            docs.append(doc_text(row))
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    qids = [q for q in qrels if q in queries and any(v > 0 for v in qrels[q].values())]
    return ids, docs, qids, [queries[q] for q in qids], qrels


def wikiqa(split: str) -> Dataset:
    """WikiQA as retrieval: every distinct sentence of the split; questions with a label-1 sentence."""
    sentences: dict[str, str] = {}
    questions: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    with (DATA / "wikiqa" / f"{split}.tsv").open(encoding="utf-8") as f:
        for line in f:
            question, sentence, label = line.rstrip("\n").split("\t")
            sid = sentences.setdefault(sentence, f"s{len(sentences)}")
            qid = questions.setdefault(question, f"q{len(questions)}")
            if label.strip() == "1":
                qrels.setdefault(qid, {})[sid] = 1
    text_of = {v: k for k, v in questions.items()}
    qids = list(qrels)
    return list(sentences.values()), list(sentences), qids, [text_of[q] for q in qids], qrels


def load(name: str, split: str) -> Dataset:
    return wikiqa(split) if name == "wikiqa" else beir(name, split)


def embed(encoder: Any, texts: list[str], cache: Path, key: str) -> np.ndarray:
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path)
    start = time.perf_counter()
    x = encoder.encode(texts, batch_size=64)
    print(f"  encoded {key}: {len(texts)} texts in {time.perf_counter() - start:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def per_query(ids: list[list[str]], qids: list[str], qrels: dict[str, dict[str, int]]) -> np.ndarray:
    return np.array([ndcg_at_k(r[:10], qrels[q], 10) for r, q in zip(ids, qids, strict=True)])


def evaluate_split(encoder: Any, tag: str, name: str, split: str, cache: Path) -> dict[str, Any]:
    """Per-query nDCG@10 of each method on one split (the index built once)."""
    doc_ids, docs, qids, queries, qrels = load(name, split)
    corpus_key = f"{tag}-{name}-{split if name == 'wikiqa' else 'all'}-corpus"
    x = embed(encoder, docs, cache, corpus_key)
    q = embed(encoder, queries, cache, f"{tag}-{name}-{split}-queries")
    index = Index(x.shape[1], lexical=LexicalConfig())
    index.add(doc_ids, x, texts=docs)
    runs: dict[str, np.ndarray] = {}

    def run(label: str, **kw: Any) -> None:
        if label not in runs:
            result = index.search(q, 10, query_texts=queries if kw.get("mode") != "dense" else None, **kw)
            runs[label] = per_query(result.ids, qids, qrels)

    run("dense", mode="dense")
    run("bm25", mode="lexical")
    run("rrf", mode="hybrid", fusion="rrf")
    run("default", mode="hybrid")
    for a in GRID:
        run(f"minmax {a}", mode="hybrid", alpha=a, normalization="minmax")
    return {"runs": runs, "queries": len(qids), "docs": len(docs)}


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from biencoder.loading import load_encoder

    encoder = load_encoder(args.model, "onnx")
    tag = "base" if args.model == "sentence-transformers/all-MiniLM-L6-v2" else Path(args.model).name
    splits = [("scifact", "train"), ("scifact", "test"), ("trec-dl19-mini", "test"), ("wikiqa", "dev"),
              ("wikiqa", "test")]  # fmt: skip
    results = {f"{n}/{s}": evaluate_split(encoder, tag, n, s, args.cache) for n, s in splits}
    choose = {"scifact": "scifact/train", "wikiqa": "wikiqa/dev"}
    rows = {}
    print(f"\nnDCG@10, {args.model}  (alpha: weight of dense; min-max alpha picked on the choosing split)")
    print("| split | queries | dense | BM25 | RRF | default hybrid | minmax, alpha picked | oracle alpha |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, res in results.items():
        runs = res["runs"]
        mean = {label: float(v.mean()) for label, v in runs.items()}
        source = choose.get(key.split("/")[0])
        picked = None
        if source is not None:
            src = {a: float(results[source]["runs"][f"minmax {a}"].mean()) for a in GRID}
            picked = max(GRID, key=lambda a: (src[a], -abs(a - 0.5)))
        oracle = max(GRID, key=lambda a: mean[f"minmax {a}"])
        p = randomisation_p_value(runs["default"] - runs["dense"])
        best_single = max(mean["dense"], mean["bm25"])
        rows[key] = {**mean, "picked_alpha": picked, "oracle_alpha": oracle, "p_default_vs_dense": p}
        picked_cell = f"{mean[f'minmax {picked}']:.4f} ({picked})" if picked is not None else "n/a"
        gain = mean["default"] - best_single
        print(f"| {key} | {res['queries']} | {mean['dense']:.4f} | {mean['bm25']:.4f} | {mean['rrf']:.4f} | "
              f"{mean['default']:.4f} ({gain:+.4f} vs best single) | {picked_cell} | "
              f"{mean[f'minmax {oracle}']:.4f} ({oracle}) |")  # fmt: skip
    print("\nPaired randomisation p, default hybrid vs dense: "
          + ", ".join(f"{k} {v['p_default_vs_dense']:.3g}" for k, v in rows.items()))  # fmt: skip
    return rows


def _latencies(index: Index, q: np.ndarray, texts: list[str], **kw: Any) -> tuple[float, float]:
    times = []
    for n in range(len(q)):
        start = time.perf_counter()
        index.search(q[n : n + 1], 10, query_texts=[texts[n]] if kw.get("mode") != "dense" else None, **kw)
        times.append(time.perf_counter() - start)
    ms = sorted(t * 1000 for t in times)
    return statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))]


def _speed_row(label: str, index: Index, q: np.ndarray, texts: list[str], build_s: float) -> dict[str, float]:
    index.search(q[:1], 10, query_texts=texts[:1], mode="hybrid")  # builds the BM25 matrix, warms up
    d50, d99 = _latencies(index, q, texts, mode="dense")
    h50, h99 = _latencies(index, q, texts, mode="hybrid")
    l50, _ = _latencies(index, q, texts, mode="lexical")
    print(f"| {label} | {build_s:.1f} | {d50:.2f} / {d99:.2f} | {l50:.2f} | {h50:.2f} / {h99:.2f} | "
          f"{h50 / d50:.2f}x |", flush=True)  # fmt: skip
    return {"build_s": build_s, "dense_p50": d50, "dense_p99": d99, "lexical_p50": l50, "hybrid_p50": h50,
            "hybrid_p99": h99, "ratio_p50": h50 / d50}  # fmt: skip


def synthetic_texts(n: int, rng: np.random.Generator, vocabulary: int = 30_000) -> list[str]:
    words = np.array([f"w{i}" for i in range(vocabulary)])
    ranks = np.arange(1, vocabulary + 1)
    p = 1.0 / ranks
    p /= p.sum()
    lengths = rng.integers(40, 121, n)
    flat = rng.choice(vocabulary, size=int(lengths.sum()), p=p)
    out, start = [], 0
    for length in lengths:
        out.append(" ".join(words[flat[start : start + length]]))
        start += length
    return out


def speed(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    print(
        "\n| corpus | BM25 build s | dense p50 / p99 ms | lexical p50 ms | hybrid p50 / p99 ms | ratio p50 |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    out = {}
    doc_ids, docs, _, queries, _ = beir("scifact", "test")
    tag = "base"
    cache = args.cache
    x_path, q_path = cache / f"{tag}-scifact-all-corpus.npy", cache / f"{tag}-scifact-test-queries.npy"
    if x_path.exists() and q_path.exists():
        x, q = np.load(x_path), np.load(q_path)
    else:
        x = rng.standard_normal((len(docs), 384)).astype(np.float32)
        q = rng.standard_normal((len(queries), 384)).astype(np.float32)
    index = Index(384, lexical=LexicalConfig())
    start = time.perf_counter()
    index.add(doc_ids, x, texts=docs)
    index.search(q[:1], 1, query_texts=queries[:1], mode="lexical")
    out["scifact"] = _speed_row(f"SciFact ({len(docs):,})", index, q, queries, time.perf_counter() - start)
    n = args.n
    texts = synthetic_texts(n, rng)
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    qtexts = [" ".join(t.split()[:8]) for t in synthetic_texts(args.queries, rng)]
    qv = rng.standard_normal((args.queries, 384)).astype(np.float32)
    big = Index(384, lexical=LexicalConfig())
    start = time.perf_counter()
    for s in range(0, n, 100_000):
        big.add(
            [f"d{i}" for i in range(s, min(n, s + 100_000))],
            vectors[s : s + 100_000],
            texts=texts[s : s + 100_000],
        )
    big.search(qv[:1], 1, query_texts=qtexts[:1], mode="lexical")
    out[f"synthetic {n}"] = _speed_row(f"synthetic ({n:,})", big, qv, qtexts, time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default="quality,speed,testbed")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "hybrid-bench")
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic passages for the speed section")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per configuration")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    sections = args.sections.split(",")
    if "quality" in sections:
        results["quality"] = quality(args)
    if "speed" in sections:
        results["speed"] = speed(args)
    if "testbed" in sections:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from hybrid_testbed import run, table

        results["testbed"] = run([args.model], args.cache)
        print(table(results["testbed"]))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
