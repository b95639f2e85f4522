"""The label-free fusion decision measured on the whole test bed (biencoder.evaluation.testbed).

For each model, corpus and split (choose, report): per-query nDCG@10 of every fusion setting the
decision may pick (and of BM25 alone), with the real queries; and per-probe reciprocal rank@10 of
the same settings on the corpus's probes (biencoder.index.probes), which read no query and no
judgement. Written as JSON for the analysis in benchmarks/hybrid.py and docs/search.md.

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/hybrid_decision.py \
        --model sentence-transformers/all-MiniLM-L6-v2 --model runs/ft-scifact-42 --output runs/decision.json

Embeddings are cached in --cache (.cache/hybrid-bench) by model and by the texts' hash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))

from biencoder.evaluation.metrics import ndcg_at_k  # noqa: E402
from biencoder.evaluation.testbed import SPLITS, TESTBED, load_testbed  # noqa: E402
from biencoder.index.fusion_choice import Candidate, convex_candidates, fused_top  # noqa: E402
from biencoder.index.lexical import LexicalIndex  # noqa: E402
from biencoder.index.probes import make_probes, probe_corpus  # noqa: E402

GRID = [round(a, 1) for a in np.arange(0.0, 1.01, 0.1)]
CANDIDATES: list[Candidate] = [
    *convex_candidates("calibrated", GRID),
    *convex_candidates("calibrated", [0.5, 0.6, 0.7, 0.8, 0.9], adaptive=True),
    *convex_candidates("minmax", GRID[:-1]),
    Candidate(label="rrf", fusion="rrf"),
]
FETCH = 1000


def embed(encoder: Any, texts: list[str], cache: Path, tag: str) -> np.ndarray:
    digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"{tag}-{digest}.npy"
    if path.exists():
        return np.load(path)
    start = time.perf_counter()
    x = encoder.encode(texts, batch_size=64, show_progress=False)
    print(f"  encoded {len(texts)} texts in {time.perf_counter() - start:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def dense_top(q: np.ndarray, x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-n (unit vectors): scores and positions [queries, n], best first, ties by position."""
    n = min(n, len(x))
    scores = q @ x.T
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    rows = np.arange(len(q))[:, None]
    order = np.lexsort((part, -scores[rows, part]), axis=1)
    positions = part[rows, order].astype(np.int64)
    return scores[rows, positions].astype(np.float32), positions


def side_lists(qv: np.ndarray, qtexts: list[str], xv: np.ndarray, texts: list[str]) -> dict[str, Any]:
    lexical = LexicalIndex()
    lexical.add(range(len(texts)), texts)
    scores, positions = dense_top(qv, xv, FETCH)
    hits = lexical.search(qtexts, min(FETCH, len(texts)))
    return {"dense": (scores, positions), "lexical": hits, "scales": lexical.query_scales(qtexts)}


def rankings(lists: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    scores, positions = lists["dense"]
    out = {"bm25": [pos[:10] for pos, _ in lists["lexical"]]}
    for c in CANDIDATES:
        out[c.label] = fused_top(scores, positions, lists["lexical"], c, lists["scales"])
    return out


def evaluate(encoder: Any, tag: str, task: str, split: str, args: argparse.Namespace) -> dict[str, Any]:
    data = load_testbed(task, split, DATA)
    doc_ids, docs = list(data.corpus), list(data.corpus.values())
    qids = list(data.queries)
    qtexts = [data.queries[q] for q in qids]
    x = embed(encoder, docs, args.cache, tag)
    q = embed(encoder, qtexts, args.cache, tag)
    real = {}
    for label, tops in rankings(side_lists(q, qtexts, x, docs)).items():
        real[label] = [
            ndcg_at_k([doc_ids[p] for p in top], data.qrels[qid], 10)
            for top, qid in zip(tops, qids, strict=True)
        ]
    probes = make_probes(docs, args.probes, seed=0)
    rows = probe_corpus(len(docs), probes, args.max_docs)
    where = np.searchsorted(rows, probes.rows)
    ptexts = [docs[r] for r in rows]
    for w, target in zip(where, probes.targets, strict=True):
        ptexts[w] = target
    px = x[rows].copy()
    px[where] = embed(encoder, probes.targets, args.cache, tag)
    pq = embed(encoder, probes.queries, args.cache, tag)
    rr = {}
    for label, tops in rankings(side_lists(pq, probes.queries, px, ptexts)).items():
        rr[label] = [
            float(1 / (np.flatnonzero(t == w)[0] + 1)) if (t == w).any() else 0.0
            for t, w in zip(tops, where, strict=True)
        ]
    return {"queries": len(qids), "docs": len(docs), "real": real, "probes": rr, "kinds": probes.kinds}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "hybrid-bench")
    parser.add_argument("--probes", type=int, default=400)
    parser.add_argument("--max-docs", type=int, default=20_000)
    parser.add_argument("--tasks", default=",".join(TESTBED))
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    from biencoder.encoder import SentenceEncoder

    results: dict[str, Any] = json.loads(args.output.read_text()) if args.output.exists() else {}
    for model in args.model:
        encoder = SentenceEncoder.load(model)
        tag = "base" if model == "sentence-transformers/all-MiniLM-L6-v2" else Path(model).name
        for task in args.tasks.split(","):
            for split in SPLITS:
                key = f"{tag}/{task}/{split}"
                start = time.perf_counter()
                results[key] = evaluate(encoder, tag, task, split, args)
                means = {k: np.mean(v) for k, v in results[key]["real"].items()}
                pm = {k: np.mean(v) for k, v in results[key]["probes"].items()}
                print(
                    f"{key}: dense {means['calibrated 1.0']:.4f} bm25 {means['bm25']:.4f} "
                    f"default {means['calibrated adaptive 0.7']:.4f} | "
                    f"probes dense {pm['calibrated 1.0']:.3f} "
                    f"bm25 {pm['bm25']:.3f} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
                args.output.write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
