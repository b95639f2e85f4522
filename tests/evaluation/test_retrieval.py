"""Exact top-k and the retrieval evaluator against sentence-transformers' InformationRetrievalEvaluator."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from biencoder.evaluation.retrieval import RetrievalEvaluator, subset, top_k
from tests.evaluation.fakes import TableEncoder, TableSTModel


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
@pytest.mark.parametrize("k", [1, 5, 40, 500])
def test_top_k_is_the_head_of_the_total_order(chunk_size: int, k: int) -> None:
    rng = np.random.default_rng(k + chunk_size)
    q = rng.integers(-1, 2, size=(9, 3)).astype(np.float32)
    d = rng.integers(-1, 2, size=(200, 3)).astype(np.float32)  # small integers: many exact ties
    tie_rank = rng.permutation(200)
    scores, idx = top_k(q, d, k, lambda a, b: a @ b.T, tie_rank, chunk_size)
    full = q @ d.T
    for row in range(9):
        expected = np.lexsort((tie_rank, -full[row]))[: min(k, 200)]
        np.testing.assert_array_equal(idx[row], expected)
        np.testing.assert_array_equal(scores[row], full[row, expected])


def test_top_k_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        top_k(np.zeros((1, 2), np.float32), np.zeros((3, 2), np.float32), 0, np.dot, np.arange(3))


def tied_collection(seed: int, n_docs: int = 300, n_queries: int = 40) -> tuple[dict, dict, dict, dict]:
    """Unit vectors with entries in {-0.5, 0, 0.5}: cosines are exact multiples of 1/4, so ties are
    exact in numpy and in torch alike, and the tie order (document id) decides rankings."""
    rng = np.random.default_rng(seed)

    def vec() -> np.ndarray:
        v = np.zeros(8, np.float32)
        v[rng.choice(8, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
        return v

    ids = [f"doc{i}" for i in rng.permutation(n_docs)]  # string order differs from insertion order
    corpus = {d: f"text of {d}" for d in ids}
    queries = {f"q{i}": f"query {i}" for i in range(n_queries + 5)}  # 5 queries have no judgements
    qrels = {
        f"q{i}": {d: int(rng.integers(1, 4)) for d in rng.choice(ids, int(rng.integers(1, 12)))}
        for i in range(n_queries)
    }
    table = {t: vec() for t in [*corpus.values(), *queries.values()]}
    return corpus, queries, qrels, table


def st_scores(
    queries: dict, corpus: dict, relevant: dict, table: dict, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> dict[str, float]:
    module = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    ks = [1, 3, 5, 10, 100]
    ev = module.InformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        corpus_chunk_size=chunk,
        accuracy_at_k=ks,
        precision_recall_at_k=ks,
        write_csv=False,
    )
    monkeypatch.setattr(ev, "store_metrics_in_model_card_data", lambda *a, **k: None)
    return {key.removeprefix("cosine_"): float(v) for key, v in ev(TableSTModel(table)).items()}


@pytest.mark.parametrize(("seed", "threshold", "chunk"), [(0, 1, 50_000), (1, 2, 37), (2, 3, 100)])
def test_evaluator_equals_sentence_transformers(
    seed: int, threshold: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, queries, qrels, table = tied_collection(seed)
    relevant = {q: {d for d, g in qrel.items() if g >= threshold} for q, qrel in qrels.items()}
    ref = st_scores(queries, corpus, relevant, table, chunk, monkeypatch)
    ours = RetrievalEvaluator(
        name="t",
        queries=queries,
        corpus=corpus,
        qrels=qrels,
        relevance_threshold=threshold,
        corpus_chunk_size=chunk,
    )(TableEncoder(table))
    for key, value in ours.items():
        if key == "ndcg@10":
            continue  # ours is graded
        assert value == pytest.approx(ref[key], abs=1e-6), key
    binary = {q: {d: 1 for d in docs} for q, docs in relevant.items() if docs}
    ours_binary = RetrievalEvaluator(
        name="t", queries=queries, corpus=corpus, qrels=binary, corpus_chunk_size=chunk
    )(TableEncoder(table))
    assert ours_binary["ndcg@10"] == pytest.approx(ref["ndcg@10"], abs=1e-6)


def test_ranking_does_not_depend_on_chunk_size() -> None:
    corpus, queries, qrels, table = tied_collection(5)
    runs = [
        RetrievalEvaluator(name="t", queries=queries, corpus=corpus, qrels=qrels, corpus_chunk_size=c).rank(
            TableEncoder(table)
        )
        for c in (1, 13, 1000)
    ]
    assert runs[0] == runs[1] == runs[2]


def write_beir(folder: Path, corpus: dict, queries: dict, qrels: dict, split: str = "test") -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for i, (d, text) in enumerate(corpus.items()):
            f.write(json.dumps({"_id": d, "title": "T" if i % 2 else "", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for q, text in queries.items():
            f.write(json.dumps({"_id": q, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t{g}" for q, qrel in qrels.items() for d, g in qrel.items()
    ]
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_from_beir_drops_unjudged_queries_and_warns_about_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = {"a": "alpha", "b": "beta", "c": "gamma"}
    queries = {"1": "one", "2": "two", "3": "three"}
    folder = write_beir(tmp_path / "beir", corpus, queries, {"1": {"a": 2}, "2": {"b": 1}})
    ev = RetrievalEvaluator.from_beir(folder, "test")
    assert ev.name == "beir" and ev.query_ids == ("1", "2")
    assert ev.corpus["b"] == "T beta"  # title and text joined as sentence-transformers does
    with caplog.at_level(logging.WARNING):
        at2 = RetrievalEvaluator.from_beir(folder, relevance_threshold=2, name="dl")
    assert at2.query_ids == ("1",) and "1 of 2 judged queries" in caplog.text
    assert RetrievalEvaluator.from_beir(folder, max_queries=1).query_ids == ("1",)
    with pytest.raises(FileNotFoundError, match=r"qrels/dev\.tsv is missing"):
        RetrievalEvaluator.from_beir(folder, "dev")


def test_evaluator_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="corpus is empty"):
        RetrievalEvaluator(name="x", queries={"q": "q"}, corpus={}, qrels={"q": {"d": 1}})
    with pytest.raises(ValueError, match="no text"):
        RetrievalEvaluator(name="x", queries={}, corpus={"d": "d"}, qrels={"q": {"d": 1}})
    with pytest.raises(ValueError, match="relevance >= 2"):
        RetrievalEvaluator(
            name="x", queries={"q": "q"}, corpus={"d": "d"}, qrels={"q": {"d": 1}}, relevance_threshold=2
        )


def test_subset_keeps_judged_documents() -> None:
    corpus, queries, qrels, _ = tied_collection(7)
    ev = RetrievalEvaluator(name="t", queries=queries, corpus=corpus, qrels=qrels)
    small = subset(ev, ["q0", "q1"], extra_docs=10)
    judged = set(qrels["q0"]) | set(qrels["q1"])
    assert judged <= set(small.corpus) and len(small.corpus) == len(judged) + 10
    assert small.query_ids == ("q0", "q1")
