"""The hybrid default on the whole test bed (biencoder.evaluation.testbed): the `testbed` section of
benchmarks/hybrid.py, also runnable alone.

For each model, corpus and split (choose, report): nDCG@10 of dense, BM25, RRF, the untuned
default (calibrated, adaptive, alpha 0.7), the oracle (the best of the fusion settings measured
in benchmarks/hybrid_decision.py, on that split's own labels) and the default the index now gets:
``Index.choose_fusion`` (the label-free decision, 256 probes) run on an index of the corpus, then
the index searched as a user would, with no setting given. The decision's seconds are reported
beside the time the corpus took to embed, for the cost target (<= 10% of `biencoder index`).

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/hybrid_testbed.py \
        --model sentence-transformers/all-MiniLM-L6-v2 --model runs/ft-scifact-42 --output runs/testbed.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))

from biencoder.evaluation.metrics import ndcg_at_k  # noqa: E402
from biencoder.evaluation.testbed import SPLITS, TESTBED, load_testbed  # noqa: E402
from biencoder.index import Index  # noqa: E402
from biencoder.index.lexical import LexicalConfig  # noqa: E402
from hybrid_decision import embed, rankings, side_lists  # noqa: E402

MARGIN = 0.005  # the target: the default >= max(dense, BM25) - MARGIN on every corpus


class CachedEncoder:
    """The model's ``encode`` through the benchmark's embedding cache (probes included)."""

    def __init__(self, encoder: Any, cache: Path, tag: str) -> None:
        self.encoder, self.cache, self.tag = encoder, cache, tag
        self.dimension, self.similarity_fn_name = encoder.dimension, encoder.similarity_fn_name
        self.similarity = encoder.similarity
        self.seconds = 0.0

    def encode(self, texts: Any, **_: Any) -> np.ndarray:
        start = time.perf_counter()
        out = embed(self.encoder, list(texts), self.cache, self.tag)
        self.seconds += time.perf_counter() - start
        return out


def evaluate(encoder: Any, tag: str, task: str, split: str, cache: Path) -> dict[str, Any]:
    data = load_testbed(task, split, DATA)
    doc_ids, docs = list(data.corpus), list(data.corpus.values())
    qids = list(data.queries)
    qtexts = [data.queries[q] for q in qids]
    start = time.perf_counter()
    x = embed(encoder, docs, cache, tag)
    embed_s = time.perf_counter() - start  # 0 when cached: see "docs_per_s" in the notes
    q = embed(encoder, qtexts, cache, tag)

    def ndcg(tops: list[Any]) -> float:
        return float(
            np.mean(
                [
                    ndcg_at_k([doc_ids[p] for p in t], data.qrels[i], 10)
                    for t, i in zip(tops, qids, strict=True)
                ]
            )
        )

    settings = {label: ndcg(tops) for label, tops in rankings(side_lists(q, qtexts, x, docs)).items()}
    cached = CachedEncoder(encoder, cache, tag)
    index = Index(encoder=cached, lexical=LexicalConfig())
    index.add(doc_ids, x, texts=docs)
    start = time.perf_counter()
    record = index.choose_fusion()
    decision_s = time.perf_counter() - start
    result = index.search(q, 10, query_texts=qtexts)  # as a user searches: no setting given
    chosen = float(
        np.mean([ndcg_at_k(ids, data.qrels[i], 10) for ids, i in zip(result.ids, qids, strict=True)])
    )
    evidence = record.evidence or {}
    return {
        "queries": len(qids),
        "docs": len(docs),
        "dense": settings["calibrated 1.0"],
        "bm25": settings["bm25"],
        "rrf": settings["rrf"],
        "untuned": settings["calibrated adaptive 0.7"],
        "oracle": max(settings.values()),
        "oracle_setting": max(settings, key=lambda k: settings[k]),
        "default": chosen,
        "choice": evidence.get("choice"),
        "reason": evidence.get("reason"),
        "probes": evidence.get("probes"),
        "decision_s": decision_s,
        "decision_encode_s": cached.seconds,
        "embed_s": embed_s,
    }


def run(models: list[str], cache: Path, tasks: list[str] | None = None) -> dict[str, Any]:
    from biencoder.encoder import SentenceEncoder

    results: dict[str, Any] = {}
    for model in models:
        encoder = SentenceEncoder.load(model)
        tag = "base" if model == "sentence-transformers/all-MiniLM-L6-v2" else Path(model).name
        for task in tasks or list(TESTBED):
            for split in SPLITS:
                key = f"{tag}/{task}/{split}"
                r = results[key] = evaluate(encoder, tag, task, split, cache)
                floor = max(r["dense"], r["bm25"]) - MARGIN
                print(
                    f"{key}: dense {r['dense']:.4f} bm25 {r['bm25']:.4f} rrf {r['rrf']:.4f} "
                    f"untuned {r['untuned']:.4f} default {r['default']:.4f} ({r['choice']}) "
                    f"oracle {r['oracle']:.4f} | {'ok' if r['default'] >= floor else 'BELOW'} "
                    f"(floor {floor:.4f}); decision {r['decision_s']:.1f} s",
                    flush=True,
                )
    return results


def table(results: dict[str, Any]) -> str:
    """The markdown table of docs/search.md."""
    lines = [
        "| model / corpus / split | dense | BM25 | RRF | untuned | **default** | oracle | chosen |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, r in results.items():
        lines.append(
            f"| {key} | {r['dense']:.4f} | {r['bm25']:.4f} | {r['rrf']:.4f} | {r['untuned']:.4f} | "
            f"**{r['default']:.4f}** | {r['oracle']:.4f} | {r['choice']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "hybrid-bench")
    parser.add_argument("--tasks", default=",".join(TESTBED))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    results = run(args.model or ["sentence-transformers/all-MiniLM-L6-v2"], args.cache, args.tasks.split(","))
    print(table(results))
    below = [k for k, r in results.items() if r["default"] < max(r["dense"], r["bm25"]) - MARGIN]
    print(f"default below max(dense, BM25) - {MARGIN}: {below or 'none'}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
