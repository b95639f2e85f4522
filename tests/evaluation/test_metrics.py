"""Metrics against the references: pytrec_eval (trec_eval), sentence-transformers, scipy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from biencoder.evaluation import metrics

K_VALUES = metrics.K_VALUES


def random_case(
    seed: int, n_queries: int = 25, n_docs: int = 400, depth: int = 150, max_grade: int = 3
) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """Rankings (depth docs each, best first) and graded qrels, with some queries of > 100 relevant docs."""
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    rankings: dict[str, list[str]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(n_queries):
        qid = f"q{q}"
        n_judged = int(rng.choice([1, 2, 5, 30, 300]))
        judged = rng.choice(n_docs, size=n_judged, replace=False)
        grades = rng.integers(0, max_grade + 1, size=n_judged)
        grades[0] = max(int(grades[0]), min(2, max_grade))  # a relevant document at any threshold used
        qrels[qid] = {docs[j]: int(g) for j, g in zip(judged, grades, strict=True)}
        # Bias relevant documents upwards so that metrics are not all ~0.
        keys = rng.random(n_docs) - 0.5 * np.isin(np.arange(n_docs), judged) * rng.random()
        rankings[qid] = [docs[j] for j in np.argsort(keys)[:depth]]
    return rankings, qrels


def trec_eval(
    rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]], threshold: int, measures: set[str]
) -> dict[str, dict[str, float]]:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    # Strictly decreasing scores: trec_eval then keeps exactly our order.
    run = {q: {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in rankings.items()}
    return pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=threshold).evaluate(run)


@pytest.mark.parametrize(("seed", "threshold"), [(0, 1), (1, 2), (2, 1)])
def test_query_metrics_equal_trec_eval(seed: int, threshold: int) -> None:
    rankings, qrels = random_case(seed)
    full = trec_eval(
        rankings,
        qrels,
        threshold,
        {"P.1,3,5,10,100", "recall.1,3,5,10,100", "ndcg_cut.10", "map_cut.100", "num_rel"},
    )
    cut10 = trec_eval({q: r[:10] for q, r in rankings.items()}, qrels, threshold, {"recip_rank"})
    cut_k = {
        k: trec_eval({q: r[:k] for q, r in rankings.items()}, qrels, threshold, {"recip_rank"})
        for k in K_VALUES
    }
    big_r = 0
    for qid, ranking in rankings.items():
        ours = metrics.query_metrics(ranking, qrels[qid], threshold=threshold)
        ref = full[qid]
        for k in K_VALUES:
            assert ours[f"precision@{k}"] == pytest.approx(ref[f"P_{k}"], abs=1e-6)
            assert ours[f"recall@{k}"] == pytest.approx(ref[f"recall_{k}"], abs=1e-6)
            assert ours[f"accuracy@{k}"] == float(cut_k[k][qid]["recip_rank"] > 0)
        assert ours["ndcg@10"] == pytest.approx(ref["ndcg_cut_10"], abs=1e-6)
        assert ours["mrr@10"] == pytest.approx(cut10[qid]["recip_rank"], abs=1e-6)
        # map@100 follows sentence-transformers (divide by min(100, R)); trec_eval divides by R.
        n_rel = int(ref["num_rel"])
        big_r += n_rel > 100
        assert ours["map@100"] == pytest.approx(ref["map_cut_100"] * n_rel / min(100, n_rel), abs=1e-6)
    assert big_r > 0  # the case exercises the definitions' difference


def st_metrics(rankings: dict[str, list[str]], relevant: dict[str, set[str]]) -> dict[str, float]:
    ir = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    corpus = {d: d for r in rankings.values() for d in r}
    ev = ir.InformationRetrievalEvaluator(
        queries={q: q for q in rankings},
        corpus=corpus,
        relevant_docs=relevant,
        accuracy_at_k=list(K_VALUES),
        precision_recall_at_k=list(K_VALUES),
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[100],
    )
    results = [
        [{"corpus_id": d, "score": float(len(rankings[q]) - i)} for i, d in enumerate(rankings[q])]
        for q in ev.queries_ids
    ]
    scores = ev.compute_metrics(results)
    return {name.replace("@k", f"@{k}"): float(v) for name, by_k in scores.items() for k, v in by_k.items()}


@pytest.mark.parametrize(("seed", "threshold", "max_grade"), [(3, 1, 1), (4, 2, 3), (5, 1, 3)])
def test_retrieval_metrics_equal_sentence_transformers(seed: int, threshold: int, max_grade: int) -> None:
    rankings, qrels = random_case(seed, max_grade=max_grade)
    relevant = {q: {d for d, g in qrel.items() if g >= threshold} for q, qrel in qrels.items()}
    ours = metrics.retrieval_metrics(rankings, qrels, threshold=threshold)
    ref = st_metrics(rankings, relevant)
    keys = set(metrics.metric_names())
    assert set(ours) == keys
    if max_grade > 1:
        keys.discard("ndcg@10")  # sentence-transformers' nDCG is binary; ours is graded (trec_eval)
    for key in keys:
        assert ours[key] == pytest.approx(ref[key], abs=1e-6), key


def test_queries_without_relevant_documents_are_left_out() -> None:
    rankings = {"a": ["x", "y"], "b": ["y", "x"]}
    qrels = {"a": {"x": 2}, "b": {"x": 1}}
    at2 = metrics.retrieval_metrics(rankings, qrels, threshold=2)
    assert at2 == metrics.query_metrics(rankings["a"], qrels["a"], threshold=2)
    with pytest.raises(ValueError, match="relevance >= 3"):
        metrics.retrieval_metrics(rankings, qrels, threshold=3)
    with pytest.raises(KeyError, match="no ranking"):
        metrics.retrieval_metrics({"a": ["x"]}, qrels)


def test_short_rankings_count_as_misses() -> None:
    ours = metrics.query_metrics(["x"], {"x": 1, "y": 1})
    assert ours["precision@10"] == pytest.approx(0.1)
    assert ours["recall@100"] == pytest.approx(0.5)
    assert ours["map@100"] == pytest.approx(0.5)
    assert metrics.query_metrics([], {"x": 1})["ndcg@10"] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_correlations_equal_scipy(seed: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 6, size=300) / 1.0  # many ties, as STS gold scores have
    pred = gold + rng.normal(size=300)
    pred[:40] = np.round(pred[:40])  # ties in the predictions too
    assert metrics.pearson(gold, pred) == pytest.approx(stats.pearsonr(gold, pred)[0], abs=1e-12)
    assert metrics.spearman(gold, pred) == pytest.approx(stats.spearmanr(gold, pred)[0], abs=1e-12)
    np.testing.assert_array_equal(metrics.rankdata(pred), stats.rankdata(pred))


def test_pearson_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="equal length"):
        metrics.pearson([1.0, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("seed", range(3))
def test_mined_pairs_scores_equal_sentence_transformers(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    module = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation.paraphrase_mining")
    rng = np.random.default_rng(seed)
    n = 60
    ids = [f"s{i}" for i in range(n)]
    duplicates = [(ids[i], ids[j]) for i, j in rng.integers(0, n, size=(40, 2)) if i != j]
    pairs = [(float(np.round(rng.random(), 2)), int(i), int(j)) for i, j in rng.integers(0, n, size=(300, 2))]
    pairs.sort(key=lambda p: -p[0])  # rounded scores: blocks of ties, as the reference handles them
    monkeypatch.setattr(module, "paraphrase_mining", lambda *a, **k: pairs)
    ev = module.ParaphraseMiningEvaluator({i: i for i in ids}, duplicates, write_csv=False)
    monkeypatch.setattr(ev, "store_metrics_in_model_card_data", lambda *a, **k: None)
    # paraphrase_mining is replaced, so the model is never called; sentence-transformers >= 6.3
    # still reads its similarity function before the call.
    ref = ev(model=SimpleNamespace(similarity=None))
    dup = {frozenset(p) for p in duplicates}
    ours = metrics.mined_pairs_scores(
        [p[0] for p in pairs],
        [frozenset((ids[i], ids[j])) in dup for _, i, j in pairs],
        ev.total_num_duplicates,
    )
    for key, value in ours.items():
        assert value == pytest.approx(ref[key], abs=1e-9), key
