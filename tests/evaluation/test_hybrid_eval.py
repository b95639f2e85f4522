"""Retrieval evaluation in three modes: lexical equals bm25s's own ranking, hybrid equals fusing by
hand; the WikiQA reader and task; the evaluate command's --retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biencoder import similarity as sim
from biencoder.cli import main as cli_main
from biencoder.data import DataFormatError
from biencoder.data.wikiqa import load_wikiqa, read_wikiqa
from biencoder.evaluation import metrics
from biencoder.evaluation.hybrid import FusionSettings, parse_modes, result_name
from biencoder.evaluation.retrieval import RetrievalEvaluator, subset
from biencoder.evaluation.tasks import TaskOptions, build_tasks, retrieval_data
from biencoder.index.fusion import (
    DEFAULT_ALPHA,
    Fusion,
    ScoreNormalization,
    SearchMode,
    convex_fusion,
    reciprocal_rank_fusion,
)
from tests.evaluation.fakes import TableEncoder

bm25s = pytest.importorskip("bm25s")
Stemmer = pytest.importorskip("Stemmer")


@pytest.fixture(scope="module")
def scifact(data_dir: Path) -> RetrievalEvaluator:
    """About 300 SciFact abstracts: the judged ones of 60 test claims and random others."""
    full = RetrievalEvaluator.from_beir(data_dir / "scifact", "test", name="scifact")
    small = subset(full, full.query_ids[:60], extra_docs=230)
    assert 280 <= len(small.corpus) <= 320
    return small


def bm25s_hits(ev: RetrievalEvaluator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """bm25s's own retrieval over the corpus: each query's rows with a score > 0, best first
    (equal scores: the smaller row, the order our index promises), at most n. bm25s ranks the
    whole corpus, so its own choice among rows tied at the cut does not enter."""
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(
        bm25s.tokenize(list(ev.corpus.values()), stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    q_tokens = bm25s.tokenize(
        [ev.queries[q] for q in ev.query_ids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    docs, scores = retriever.retrieve(q_tokens, k=len(ev.corpus), show_progress=False)
    out = []
    for row, values in zip(docs, scores, strict=True):
        keep = values > 0
        row, values = row[keep].astype(np.int64), values[keep]
        order = np.lexsort((row, -values))[:n]
        out.append((row[order], values[order]))
    return out


def test_lexical_mode_equals_bm25s_ranking(scifact: RetrievalEvaluator) -> None:
    doc_ids = list(scifact.corpus)
    rankings = {
        q: [doc_ids[j] for j in row]
        for q, (row, _) in zip(scifact.query_ids, bm25s_hits(scifact, 100), strict=True)
    }
    qrels = {q: scifact.qrels[q] for q in scifact.query_ids}
    expected = metrics.retrieval_metrics(rankings, qrels)
    got = scifact.evaluate_modes(None, "lexical")  # no encoder: BM25 needs none
    assert list(got) == ["scifact-bm25"]
    assert got["scifact-bm25"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert scifact.rank_modes(None, [SearchMode.LEXICAL])[SearchMode.LEXICAL] == rankings
    per_query = scifact.last_per_query_by_name["scifact-bm25"]
    assert per_query[scifact.query_ids[0]] == metrics.query_metrics(
        rankings[scifact.query_ids[0]], qrels[scifact.query_ids[0]]
    )
    assert expected["ndcg@10"] > 0.5  # BM25 is strong on SciFact: a sanity check of the wiring
    with pytest.raises(ValueError, match="need an encoder"):
        scifact.evaluate_modes(None, "dense,lexical")


def random_table(ev: RetrievalEvaluator, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    texts = [*ev.corpus.values(), *(ev.queries[q] for q in ev.query_ids)]
    return {t: rng.normal(size=16).astype(np.float32) for t in texts}


@pytest.mark.parametrize(
    "settings",
    [
        FusionSettings(),  # the untuned default: calibrated, adaptive, DEFAULT_ALPHA
        FusionSettings(alpha=0.3, normalization=ScoreNormalization.MINMAX, candidates=40),
        FusionSettings(alpha=0.8, normalization=ScoreNormalization.ZSCORE, candidates=1000),
        FusionSettings(fusion=Fusion.RRF, candidates=25),
    ],
)
def test_hybrid_mode_equals_fusing_by_hand(scifact: RetrievalEvaluator, settings: FusionSettings) -> None:
    table = random_table(scifact)
    encoder = TableEncoder(table)
    got = scifact.evaluate_modes(encoder, "dense,lexical,hybrid", settings)
    assert list(got) == ["scifact", "scifact-bm25", "scifact-hybrid"]
    assert encoder.calls == 2  # queries and corpus encoded once, for both dense and hybrid
    doc_ids = list(scifact.corpus)
    d_emb = np.stack([table[scifact.corpus[d]] for d in doc_ids])
    q_emb = np.stack([table[scifact.queries[q]] for q in scifact.query_ids])
    full = sim.cosine(q_emb, d_emb)  # [q, docs]
    fetch = max(settings.candidates, 100)
    lexical = bm25s_hits(scifact, fetch)
    scales = scifact.bm25().query_scales([scifact.queries[q] for q in scifact.query_ids])
    rankings = {}
    for n, q in enumerate(scifact.query_ids):
        dense_keys = np.argsort(-full[n], kind="stable")[:fetch]  # random floats: no ties
        lex_keys, lex_scores = lexical[n]
        assert len(lex_keys), "every SciFact claim has a word in the corpus"
        sides = (dense_keys, full[n, dense_keys].astype(np.float64), lex_keys, lex_scores)
        resolved = settings.search_settings(100)
        if resolved.fusion is Fusion.RRF:
            fused = reciprocal_rank_fusion(*sides, k=100)
        else:
            fused = convex_fusion(
                *sides,
                alpha=resolved.alpha,
                k=100,
                normalization=resolved.normalization,
                lexical_scale=float(scales[n]),
                adaptive=resolved.adaptive,
            )
        rankings[q] = [doc_ids[j] for j in fused.keys]
    qrels = {q: scifact.qrels[q] for q in scifact.query_ids}
    assert got["scifact-hybrid"] == pytest.approx(
        metrics.retrieval_metrics(rankings, qrels), rel=1e-12, abs=1e-12
    )
    assert got["scifact"] == scifact(TableEncoder(table))  # dense as before
    assert set(scifact.last_per_query) == set(scifact.query_ids)


def test_modes_and_fusion_settings_are_checked() -> None:
    assert parse_modes("dense, hybrid,dense") == (SearchMode.DENSE, SearchMode.HYBRID)
    with pytest.raises(ValueError, match=r"unknown search mode 'sparse'; valid: dense, lexical, hybrid"):
        parse_modes("dense,sparse")
    with pytest.raises(ValueError, match="no retrieval mode"):
        parse_modes(" , ")
    assert [result_name("t", m) for m in SearchMode] == ["t", "t-bm25", "t-hybrid"]
    with pytest.raises(ValueError, match="rrf fusion takes none"):
        FusionSettings(fusion=Fusion.RRF, alpha=0.5)
    with pytest.raises(ValueError, match="alpha must be a number in"):
        FusionSettings(alpha=1.5)
    with pytest.raises(ValueError, match="candidates must be a positive integer"):
        FusionSettings(candidates=0)
    assert FusionSettings().to_dict() == {
        "fusion": "convex",
        "alpha": DEFAULT_ALPHA,
        "normalization": "calibrated",
        "adaptive": True,
        "candidates": 1000,
    }


# --- WikiQA -------------------------------------------------------------------------------------

WIKIQA_COUNTS = {  # split: (lines, judged queries, sentences, qrels), measured on the official files
    "train": (20_360, 873, 18_821, 1_040),
    "dev": (2_733, 126, 2_707, 140),
    "test": (6_165, 243, 5_951, 293),
}


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_wikiqa_counts(data_dir: Path, split: str) -> None:
    path = data_dir / "wikiqa" / f"{split}.tsv"
    lines, queries, sentences, qrels = WIKIQA_COUNTS[split]
    assert len(read_wikiqa(path)) == lines
    data = load_wikiqa(path)
    assert (len(data.queries), len(data.corpus), sum(len(r) for r in data.qrels.values())) == (
        queries,
        sentences,
        qrels,
    )
    assert set(data.queries) == set(data.qrels)
    assert all(d in data.corpus for r in data.qrels.values() for d in r)
    assert {g for r in data.qrels.values() for g in r.values()} == {1}


def test_wikiqa_reader_keeps_quotes_and_names_bad_lines(tmp_path: Path) -> None:
    good = 'who said "to be" ?\tHamlet says "to be, or not to be" .\t1\nwho said "to be" ?\tOther .\t0\n'
    path = tmp_path / "w.tsv"
    path.write_text(good)
    data = load_wikiqa(path)
    assert list(data.queries.values()) == ['who said "to be" ?']
    assert list(data.corpus.values()) == ['Hamlet says "to be, or not to be" .', "Other ."]
    assert data.qrels == {"q00000": {"s00000": 1}}
    for bad, message in [
        ("q\ts\n", r"w\.tsv:3: expected 'question \\t sentence \\t label' \(3 columns\), got 2"),
        ("q\ts\t1\textra\n", r"w\.tsv:3: .*got 4"),
        ("q\ts\t2\n", r"w\.tsv:3: label '2' is not 0 or 1"),
        ("q\ts\tyes\n", r"w\.tsv:3: label 'yes' is not 0 or 1"),
    ]:
        path.write_text(good + bad)
        with pytest.raises(DataFormatError, match=message):
            read_wikiqa(path)
    path.write_text("q\ts\t0\n")
    with pytest.raises(DataFormatError, match="no question has a label-1 sentence"):
        load_wikiqa(path)


def test_wikiqa_tasks(data_dir: Path) -> None:
    (ev,) = build_tasks(["wikiqa-dev"], data_dir, TaskOptions(limit=5))
    assert isinstance(ev, RetrievalEvaluator) and ev.name == "wikiqa-dev" and len(ev.query_ids) == 5
    data, task = retrieval_data("wikiqa", data_dir)
    assert task.split == "test" and len(data.queries) == 243
    with pytest.raises(
        ValueError, match="stsb is not a retrieval task; retrieval tasks: scifact, trec-dl19, wikiqa"
    ):
        retrieval_data("stsb", data_dir)


# --- the evaluate command -----------------------------------------------------------------------


def test_evaluate_lexical_loads_no_model(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = [
        "evaluate",
        "--model",
        str(tmp_path / "no-such-model"),
        "--task",
        "wikiqa-dev",
        "--data",
        str(data_dir),
    ]
    assert cli_main([*argv, "--limit", "5", "--retrieval", "lexical", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] is None and list(report["results"]) == ["wikiqa-dev-bm25"]
    assert report["retrieval"] == {"modes": ["lexical"]}
    assert report["primary_metrics"] == {"wikiqa-dev-bm25": "ndcg@10"}


def test_evaluate_three_modes(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    argv = [
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--task",
        "wikiqa-dev",
        "--data",
        str(data_dir),
        "--limit",
        "6",
    ]
    assert (
        cli_main([*argv, "--retrieval", "dense,lexical,hybrid", "--alpha", "0.25", "--output", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["wikiqa-dev", "wikiqa-dev-bm25", "wikiqa-dev-hybrid"]
    assert report["retrieval"] == {
        "modes": ["dense", "lexical", "hybrid"],
        "fusion": "convex",
        "alpha": 0.25,
        "normalization": "calibrated",
        "adaptive": False,
        "candidates": 1000,
    }
    assert "| wikiqa-dev-hybrid | ndcg@10 |" in capsys.readouterr().out
    assert cli_main([*argv, "--retrieval", "dense,sparse"]) == 1
    assert "unknown search mode 'sparse'; valid: dense, lexical, hybrid" in capsys.readouterr().err
    assert cli_main([*argv, "--retrieval", "hybrid", "--fusion", "rrf", "--alpha", "0.3"]) == 1
    assert "rrf fusion takes none" in capsys.readouterr().err
