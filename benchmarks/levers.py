"""Issue 29's measure of a fine-tune: in the domain, and what it forgets, against the base model.

For each model: SciFact test nDCG@10 (dense, per query kept), TREC DL19-mini nDCG@10 (all 43
queries), STSb test Spearman, and two general tasks of the test bed that no lever trains on
(WikiQA test, SNLI test, Quora and MRPC duplicates, all as retrieval: the report splits of
biencoder.evaluation.testbed; a lever that trains on one of them leaves the others), and SciFact
test searched hybrid as `biencoder index --lexical` leaves a folder (BM25 beside the model, fused
as the label-free decision chose from the corpus; no query read). Then
each model against a reference model (``--against``, default the first) on SciFact test, per
query: wins / ties / losses and the paired randomisation p-value. Embeddings are cached in
--cache by model and texts, so a model already measured costs nothing.

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/levers.py \\
        --model sentence-transformers/all-MiniLM-L6-v2 --model runs/ft-scifact-42 \\
        --model runs/ft-combo-42 --output runs/levers.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from biencoder.data.beir import BeirDataset, load_beir  # noqa: E402
from biencoder.evaluation.metrics import ndcg_at_k, spearman  # noqa: E402
from biencoder.evaluation.paired import compare  # noqa: E402
from biencoder.evaluation.sts import load_sts  # noqa: E402
from biencoder.evaluation.testbed import load_testbed  # noqa: E402
from biencoder.index import Index  # noqa: E402
from biencoder.index.lexical import LexicalConfig  # noqa: E402
from hybrid_decision import embed  # noqa: E402  (the embedding cache the test bed shares)
from hybrid_testbed import CachedEncoder  # noqa: E402

GENERAL = ("wikiqa", "snli", "quora", "mrpc")  # test-bed tasks, report splits
COLUMNS = ("scifact", "scifact-hybrid", "trec-dl19", "stsb", *GENERAL)


def per_query_ndcg(encoder: Any, data: BeirDataset, cache: Path, tag: str) -> dict[str, float]:
    doc_ids, docs = list(data.corpus), list(data.corpus.values())
    qids = list(data.queries)
    x = embed(encoder, docs, cache, tag)
    q = embed(encoder, [data.queries[i] for i in qids], cache, tag)
    scores = q @ x.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return {
        qid: ndcg_at_k([doc_ids[p] for p in row], data.qrels[qid], 10)
        for qid, row in zip(qids, top, strict=True)
    }


def per_query_hybrid(encoder: Any, data: BeirDataset, cache: Path, tag: str) -> tuple[dict[str, float], str]:
    """SciFact test searched as `biencoder index --lexical` leaves a folder: BM25 beside the model,
    fused as the label-free decision (256 probes cut from the corpus) chose, no test query read.
    Returns the per-query nDCG@10 and the decision's choice."""
    doc_ids, docs = list(data.corpus), list(data.corpus.values())
    qids = list(data.queries)
    qtexts = [data.queries[i] for i in qids]
    cached = CachedEncoder(encoder, cache, tag)
    index = Index(encoder=cached, lexical=LexicalConfig())
    index.add(doc_ids, cached.encode(docs), texts=docs)
    record = index.choose_fusion()
    result = index.search(cached.encode(qtexts), 10, query_texts=qtexts)  # no setting: the default
    scores = {qid: ndcg_at_k(ids, data.qrels[qid], 10) for qid, ids in zip(qids, result.ids, strict=True)}
    return scores, str((record.evidence or {}).get("choice"))


def measure(model: str, cache: Path) -> dict[str, Any]:
    from biencoder.encoder import SentenceEncoder

    encoder = SentenceEncoder.load(model)
    tag = "base" if model == "sentence-transformers/all-MiniLM-L6-v2" else Path(model).name
    scifact_test = load_beir(DATA / "scifact", "test")
    scifact = per_query_ndcg(encoder, scifact_test, cache, tag)
    hybrid, choice = per_query_hybrid(encoder, scifact_test, cache, tag)
    dl19 = per_query_ndcg(encoder, load_beir(DATA / "trec-dl19-mini", "test"), cache, tag)
    sts = load_sts(DATA / "stsb" / "sts-test.csv")
    a = embed(encoder, list(sts.sentences1), cache, tag)
    b = embed(encoder, list(sts.sentences2), cache, tag)
    out: dict[str, Any] = {
        "scifact": float(np.mean(list(scifact.values()))),
        "scifact-hybrid": float(np.mean(list(hybrid.values()))),
        "hybrid_choice": choice,
        "trec-dl19": float(np.mean(list(dl19.values()))),
        "stsb": spearman(np.sum(a * b, axis=1), np.asarray(sts.scores)),
        "per_query": {"scifact": scifact, "scifact-hybrid": hybrid, "trec-dl19": dl19},
    }
    for task in GENERAL:
        scores = per_query_ndcg(encoder, load_testbed(task, "report", DATA), cache, tag)
        out[task] = float(np.mean(list(scores.values())))
        out["per_query"][task] = scores
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--against", help="the model each is compared with on SciFact (default: the first)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "hybrid-bench")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    results: dict[str, Any] = json.loads(args.output.read_text()) if args.output.exists() else {}
    for model in args.model:
        if model not in results or set(COLUMNS) - set(results[model]):
            results[model] = measure(model, args.cache)
            partial = args.output.with_suffix(".tmp")
            partial.write_text(json.dumps(results))
            partial.replace(args.output)
    against = args.against or args.model[0]
    labels = (
        "SciFact test",
        "SciFact hybrid",
        "DL19-mini",
        "STSb test",
        "WikiQA test",
        "SNLI test",
        "Quora",
        "MRPC",
    )
    head = "| model | " + " | ".join(labels) + " |"
    print(f"{head} vs {against} on SciFact |")
    print("|---|" + "---:|" * len(COLUMNS) + "---|")
    for model in args.model:
        r = results[model]
        paired = ""
        if model != against:
            c = compare(results[against]["per_query"]["scifact"], r["per_query"]["scifact"])
            paired = f"{c.mean_b - c.mean_a:+.4f}, {c.wins}/{c.ties}/{c.losses}, p {c.p_value:.3f}"
        cells = " | ".join(f"{r[k]:.4f}" for k in COLUMNS)
        print(f"| {model} | {cells} | {paired} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
