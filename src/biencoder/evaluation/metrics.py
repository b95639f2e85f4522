"""Evaluation metrics as pure functions of rankings, qrels, scores and labels (numpy only).

Retrieval metrics, per query, from a ranked list of document ids and graded judgements
(``qrels``: doc id -> grade). A document is *relevant* for the binary metrics when its grade is
at least ``threshold`` (1 by default; TREC DL counts grade >= 2). Where the two references
differ, each key follows one of them, and the tests check it against that one:

- ``accuracy@k``: 1 if a relevant document is in the top k (sentence-transformers'
  InformationRetrievalEvaluator; trec_eval's ``success@k``).
- ``precision@k``: relevant in the top k, divided by k even when fewer were retrieved (both agree).
- ``recall@k``: relevant in the top k over all relevant documents (both agree).
- ``mrr@10``: reciprocal rank of the first relevant document within the top 10, else 0
  (sentence-transformers; trec_eval's ``recip_rank`` of the run cut at 10).
- ``ndcg@10``: graded, trec_eval's ``ndcg_cut_10``: gain = the judged grade (linear, 0 when
  unjudged or <= 0), discount log2(rank + 1), ideal from all judged grades. On binary qrels
  it equals sentence-transformers' (binary) nDCG.
- ``map@100``: sentence-transformers' definition: the sum of precision at each relevant hit in
  the top 100, divided by min(100, R). trec_eval's ``map_cut_100`` divides by R instead; the
  two agree whenever a query has at most 100 relevant documents.

Queries are averaged with equal weight; a query without any relevant document at the
threshold has no recall and is left out (as sentence-transformers does), with a warning by the
caller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

K_VALUES: tuple[int, ...] = (1, 3, 5, 10, 100)
MRR_K = 10
NDCG_K = 10
MAP_K = 100


def metric_names(k_values: Sequence[int] = K_VALUES) -> list[str]:
    """The retrieval keys in display order."""
    names = [f"accuracy@{k}" for k in k_values]
    names += [f"precision@{k}" for k in k_values]
    names += [f"recall@{k}" for k in k_values]
    return [*names, f"mrr@{MRR_K}", f"ndcg@{NDCG_K}", f"map@{MAP_K}"]


def dcg(gains: Sequence[float] | np.ndarray) -> float:
    """Discounted cumulative gain: sum of gain_i / log2(i + 1) over ranks i = 1, 2, ..."""
    g = np.asarray(gains, dtype=np.float64)
    if g.size == 0:
        return 0.0
    return float((g / np.log2(np.arange(2, g.size + 2))).sum())


def ndcg_at_k(ranking: Sequence[str], qrel: Mapping[str, int], k: int) -> float:
    """Graded nDCG@k (trec_eval ``ndcg_cut``): linear gains from ``qrel``, ideal from all grades."""
    gains = [max(qrel.get(doc, 0), 0) for doc in ranking[:k]]
    ideal = sorted((g for g in qrel.values() if g > 0), reverse=True)[:k]
    best = dcg(ideal)
    return dcg(gains) / best if best > 0 else 0.0


def query_metrics(
    ranking: Sequence[str],
    qrel: Mapping[str, int],
    *,
    threshold: int = 1,
    k_values: Sequence[int] = K_VALUES,
) -> dict[str, float]:
    """All retrieval metrics of one query. ``ranking``: doc ids, best first (at least 100 for MAP@100)."""
    relevant = {doc for doc, grade in qrel.items() if grade >= threshold}
    if not relevant:
        raise ValueError("query_metrics needs at least one relevant document at the threshold")
    hits = np.array([doc in relevant for doc in ranking], dtype=bool)
    cum = np.cumsum(hits)
    out: dict[str, float] = {}

    def found(k: int) -> int:
        return int(cum[min(k, len(cum)) - 1]) if len(cum) else 0

    for k in k_values:
        out[f"accuracy@{k}"] = float(found(k) > 0)
    for k in k_values:
        out[f"precision@{k}"] = found(k) / k
    for k in k_values:
        out[f"recall@{k}"] = found(k) / len(relevant)
    first = np.flatnonzero(hits[:MRR_K])
    out[f"mrr@{MRR_K}"] = 1.0 / (first[0] + 1) if first.size else 0.0
    out[f"ndcg@{NDCG_K}"] = ndcg_at_k(ranking, qrel, NDCG_K)
    ranks = np.flatnonzero(hits[:MAP_K]) + 1  # 1-based ranks of the relevant hits
    precisions = np.arange(1, ranks.size + 1) / ranks
    out[f"map@{MAP_K}"] = float(precisions.sum()) / min(MAP_K, len(relevant))
    return out


def has_relevant(qrel: Mapping[str, int], threshold: int = 1) -> bool:
    return any(grade >= threshold for grade in qrel.values())


def retrieval_metrics(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    threshold: int = 1,
    k_values: Sequence[int] = K_VALUES,
) -> dict[str, float]:
    """Mean of :func:`query_metrics` over the queries of ``qrels`` that have a relevant document.

    Every such query must have a ranking (a missing one is an error, not a silent zero).
    """
    per_query = []
    for qid, qrel in qrels.items():
        if not has_relevant(qrel, threshold):
            continue
        if qid not in rankings:
            raise KeyError(f"no ranking for query {qid!r}")
        per_query.append(query_metrics(rankings[qid], qrel, threshold=threshold, k_values=k_values))
    if not per_query:
        raise ValueError(f"no query has a document with relevance >= {threshold}")
    return {name: float(np.mean([m[name] for m in per_query])) for name in per_query[0]}


# -- correlation (STS) ----------------------------------------------------------------------------


def rankdata(x: ArrayLike) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (scipy.stats.rankdata's default)."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    group = np.cumsum(starts) - 1  # group id of each sorted position
    bounds = np.r_[np.flatnonzero(starts), a.size]
    average = (bounds[:-1] + bounds[1:] + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = average[group]
    return ranks


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation coefficient, in float64."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"pearson needs two 1-D arrays of equal length >= 2, got {a.shape} and {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation: Pearson of the (average-tie) ranks."""
    return pearson(rankdata(x), rankdata(y))


# -- paraphrase mining ----------------------------------------------------------------------------


def mined_pairs_scores(
    scores: Sequence[float], correct: Sequence[bool], total_duplicates: int
) -> dict[str, float]:
    """Average precision and the best-F1 operating point of mined pairs, best first.

    sentence-transformers' ParaphraseMiningEvaluator: pairs with equal scores are taken as one
    block; precision is counted at each block that adds a correct pair, weighted by the correct
    pairs it adds, and summed over ``total_duplicates`` (so duplicates never mined count as 0).
    ``threshold`` is the midpoint between the best-F1 block's score and the next pair's.
    """
    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores but {len(correct)} correctness flags")
    n_correct = previous = 0
    ap = best_f1 = best_p = best_r = threshold = 0.0
    n = len(scores)
    for idx in range(n):
        n_correct += bool(correct[idx])
        if idx + 1 < n and scores[idx + 1] == scores[idx]:
            continue
        if n_correct > previous:
            precision = n_correct / (idx + 1)
            recall = n_correct / total_duplicates if total_duplicates > 0 else 0.0
            f1 = 2 * precision * recall / (precision + recall)
            ap += precision * (n_correct - previous)
            if f1 > best_f1:
                best_f1, best_p, best_r = f1, precision, recall
                threshold = (scores[idx] + scores[min(idx + 1, n - 1)]) / 2
        previous = n_correct
    return {
        "average_precision": ap / total_duplicates if total_duplicates > 0 else 0.0,
        "f1": best_f1,
        "precision": best_p,
        "recall": best_r,
        "threshold": float(threshold),
    }
