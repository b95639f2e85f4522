"""The retrieval test bed: paired sets read as retrieval, splits disjoint, bad input named."""

from __future__ import annotations

from pathlib import Path

import pytest

from biencoder.data import DataFormatError
from biencoder.evaluation.testbed import (
    SPLITS,
    TESTBED,
    banking_as_retrieval,
    load_testbed,
    pairs_as_retrieval,
    read_quora,
)


def test_pairs_as_retrieval_queries_corpus_and_judgements() -> None:
    pairs = [("a", "x", True), ("a", "y", False), ("b", "y", True), ("c", "z", False), ("x", "x", True)]
    data = pairs_as_retrieval(pairs)
    assert sorted(data.corpus.values()) == ["x", "y", "z"]  # every distinct second text
    text_of = {v: k for k, v in data.corpus.items()}
    queries = {v: k for k, v in data.queries.items()}
    assert set(queries) == {"a", "b"}  # positive first texts; a text paired with itself is no query
    assert data.qrels[queries["a"]] == {text_of["x"]: 1}
    assert data.qrels[queries["b"]] == {text_of["y"]: 1}


def test_banking_relevant_is_same_intent_and_queries_leave_the_corpus() -> None:
    texts = [f"t{i}" for i in range(20)]
    labels = ["a" if i % 2 else "b" for i in range(20)]
    data = banking_as_retrieval(texts, labels, queries=4)
    assert len(data.queries) == 4
    assert not set(data.queries.values()) & set(data.corpus.values())
    for qid, text in data.queries.items():
        want = {d for d, t in data.corpus.items() if labels[int(t[1:])] == labels[int(text[1:])]}
        assert set(data.qrels[qid]) == want


def test_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text("q1\tq2\t1\nonly one column\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"dev.tsv:2"):
        read_quora(path)
    path.write_text("q1\tq2\tyes\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="label 'yes'"):
        read_quora(path)


def test_unknown_names_and_missing_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown test bed task"):
        load_testbed("nope", "choose", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_testbed("quora", "dev", tmp_path)
    with pytest.raises(FileNotFoundError, match="quora"):
        load_testbed("quora", "choose", tmp_path)


@pytest.mark.parametrize("name", list(TESTBED))
def test_real_splits_are_disjoint_and_judged(name: str, data_dir: Path) -> None:
    if not (data_dir / TESTBED[name].path).exists():
        pytest.skip(f"real data not found at {data_dir}")
    choose, report = (load_testbed(name, s, data_dir, max_queries=200) for s in SPLITS)
    for data in (choose, report):
        assert 0 < len(data.queries) <= 200
        assert all(data.qrels[q] and set(data.qrels[q]) <= set(data.corpus) for q in data.queries)
    if choose.corpus == report.corpus:  # one corpus, its queries halved: no query on both sides
        assert not set(choose.queries.values()) & set(report.queries.values())


def test_wikiqa_articles_join_each_questions_candidates(tmp_path: Path) -> None:
    from biencoder.data.wikiqa import load_wikiqa_articles

    path = tmp_path / "train.tsv"
    rows = [
        ("who is a", "A is a cat .", "0"),
        ("who is a", "A was born in 2000 .", "1"),
        ("where is b", "B is a town .", "0"),
        ("what is a", "A is a cat .", "0"),  # another question on the same article
        ("what is a", "A was born in 2000 .", "0"),  # ... with no answer: no query
        ("when was b", "B is a town .", "1"),
    ]
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    data = load_wikiqa_articles(path)
    assert sorted(data.corpus.values()) == ["A is a cat . A was born in 2000 .", "B is a town ."]
    doc_of = {t: d for d, t in data.corpus.items()}
    qid_of = {t: q for q, t in data.queries.items()}
    assert set(qid_of) == {"who is a", "when was b"}
    assert data.qrels[qid_of["who is a"]] == {doc_of["A is a cat . A was born in 2000 ."]: 1}
    assert data.qrels[qid_of["when was b"]] == {doc_of["B is a town ."]: 1}
    path.write_text("who is a\tA is a cat .\t0\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no question has a label-1 sentence"):
        load_wikiqa_articles(path)
