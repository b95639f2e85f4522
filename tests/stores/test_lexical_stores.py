"""Lexical and hybrid search on the database backends, each with the database's own full-text
search (LanceDB's native FTS index; PostgreSQL's tsvector, GIN, ts_rank_cd), fused by the
in-process index's fusion functions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.cli import main
from biencoder.data.beir import doc_text, load_qrels, load_queries
from biencoder.index import Index
from biencoder.index.fusion import DEFAULT_ALPHA, convex_fusion, reciprocal_rank_fusion
from biencoder.index.lexical import LexicalConfig
from biencoder.stores.build import StoreSpec, build_store
from biencoder.stores.contract import SearchNotOffered, plan_search
from biencoder.stores.folder import open_store
from tests.index.test_cli import _corpus

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

BACKENDS = ["lancedb", "pgvector"]
N_DOCS, N_QUERIES, DIM = 300, 10, 16


@pytest.fixture(scope="module")
def scifact(data_dir: Path) -> dict[str, Any]:
    """300 real SciFact abstracts: the relevant ones of the first 10 test claims, then the first
    others of the corpus; random unit vectors (the dense side only has to be fixed, not good)."""
    folder = data_dir / "scifact"
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / "test.tsv")
    qids = [q for q in qrels if q in queries][:N_QUERIES]
    wanted = {d for q in qids for d in qrels[q]}
    docs: dict[str, str] = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["_id"] in wanted or len(docs) < N_DOCS - len(wanted):
                docs[row["_id"]] = doc_text(row)
    assert wanted <= set(docs) and len(docs) <= N_DOCS
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(docs), DIM)).astype(np.float32)
    q = rng.standard_normal((len(qids), DIM)).astype(np.float32)
    return {
        "ids": list(docs),
        "texts": list(docs.values()),
        "x": x,
        "q": q,
        "queries": [queries[i] for i in qids],
        "relevant": [{d for d, grade in qrels[i].items() if grade > 0} for i in qids],
    }


def _dsn(backend: str, request: pytest.FixtureRequest) -> str | None:
    if backend == "lancedb":
        pytest.importorskip("lancedb")
        return None
    return str(request.getfixturevalue("pg_dsn"))


def _build(backend: str, folder: Path, data: dict[str, Any], dsn: str | None, **spec: Any) -> Any:
    kwargs: dict[str, Any] = {"lexical": LexicalConfig(), "table": f"lex_{folder.name}", **spec}
    rows = [(data["ids"], data["x"], data["texts"])]
    build_store(StoreSpec(backend=backend, dsn=dsn, **kwargs), folder, rows, dimension=DIM, model_name="m")
    return open_store(folder, dsn=dsn)


@pytest.fixture(scope="module", params=BACKENDS)
def store(
    request: pytest.FixtureRequest, scifact: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    backend = request.param
    folder = tmp_path_factory.mktemp("lexical") / backend
    opened = _build(backend, folder, scifact, _dsn(backend, request))
    yield opened
    if backend == "pgvector":
        opened.close()


@pytest.fixture(scope="module")
def bm25(scifact: dict[str, Any]) -> Index:
    index = Index(DIM, lexical=LexicalConfig())
    index.add(scifact["ids"], scifact["x"], texts=scifact["texts"])
    return index


def test_the_manifest_records_the_lexical_part(store: Any) -> None:
    assert store.has_lexical and store.has_texts
    assert store.manifest.lexical_params  # the analyser as built
    assert plan_search(store, k=10).mode.value == "hybrid"  # the default with a lexical part


# the lowest each backend may reach on these 10 claims: (BM25's top-1 found in the top-10, mean
# overlap@10 with BM25's top-10, recall@10 of the relevant abstracts); see the test's docstring
AGREEMENT = {"lancedb": (0.9, 0.7, 0.8), "pgvector": (0.8, 0.4, 0.8)}


def test_lexical_top10_agrees_with_the_memory_backends_bm25(store: Any, bm25: Index, scifact: Any) -> None:
    """The rankers differ by design: LanceDB's BM25 has its own tokenizer, stemmer and stop words;
    ts_rank_cd has no idf at all (it weighs covers of the query words by their density). So the
    lists are not equal, but on real abstracts both must find what BM25 finds and what is relevant.
    Measured on these 10 claims: BM25's top-1 is in LanceDB's top-10 for 10/10 and PostgreSQL's
    for 10/10; mean overlap@10 0.84 and 0.49; recall@10 of the relevant abstracts 0.90 for both
    (BM25: 0.80). On 100 claims over 2,000 abstracts PostgreSQL's numbers fall to 0.75 and 0.34
    (LanceDB's stay at 1.00 and 0.91): the bounds leave that margin for the smaller sample's noise.
    """
    got = store.search(scifact["queries"], 10, mode="lexical")
    want = bm25.search(scifact["queries"], 10, mode="lexical")
    assert got.mode == "lexical" and all(len(ids) == 10 for ids in got.ids)
    assert all(np.all(np.diff(s) <= 0) for s in got.scores)  # best first
    pairs = list(zip(got.ids, want.ids, scifact["relevant"], strict=True))
    top1 = np.mean([w[0] in g for g, w, _ in pairs])
    overlap = np.mean([len(set(g) & set(w)) / 10 for g, w, _ in pairs])
    recall = np.mean([len(set(g) & r) / len(r) for g, _, r in pairs])
    low = AGREEMENT[store.backend]
    assert top1 >= low[0] and overlap >= low[1] and recall >= low[2], (top1, overlap, recall)


def _by_hand(store: Any, scifact: Any, candidates: int, **options: Any) -> list[tuple[list[str], Any]]:
    """Each query's fused list from the store's own two lists (its dense and lexical search)."""
    dense = store.search(scifact["q"], candidates, mode="dense")
    lexical = store.search(scifact["queries"], candidates, mode="lexical")
    out = []
    for d_ids, d_scores, l_ids, l_scores in zip(
        dense.ids, dense.scores, lexical.ids, lexical.scores, strict=True
    ):
        names = sorted({*d_ids, *l_ids})  # the store's keys: ties go to the smaller id
        key = {n: i for i, n in enumerate(names)}
        sides = (
            np.array([key[i] for i in d_ids]),
            np.array(d_scores),
            np.array([key[i] for i in l_ids]),
            np.array(l_scores),
        )
        if options.get("fusion") == "rrf":
            fused = reciprocal_rank_fusion(*sides, k=10)
        else:
            fused = convex_fusion(*sides, k=10, **options)
        out.append(([names[i] for i in fused.keys], fused.scores))
    return out


@pytest.mark.parametrize(
    ("search", "by_hand"),
    [
        ({}, {"alpha": DEFAULT_ALPHA, "normalization": "minmax", "adaptive": True}),  # the default
        ({"alpha": 0.4}, {"alpha": 0.4, "normalization": "minmax"}),
        ({"alpha": 0.5, "normalization": "zscore"}, {"alpha": 0.5, "normalization": "zscore"}),
        ({"fusion": "rrf"}, {"fusion": "rrf"}),
    ],
    ids=["default", "minmax-0.4", "zscore-0.5", "rrf"],
)
def test_hybrid_is_the_fusion_of_the_stores_own_lists(
    store: Any, scifact: Any, search: dict[str, Any], by_hand: dict[str, Any]
) -> None:
    got = store.search(
        scifact["q"], 10, mode="hybrid", query_texts=scifact["queries"], candidates=50, **search
    )
    assert got.mode == "hybrid" and got.lexical_scores is not None
    for n, (ids, scores) in enumerate(_by_hand(store, scifact, 50, **by_hand)):
        assert got.ids[n] == ids
        np.testing.assert_allclose(got.scores[n], scores, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_upsert_and_remove_are_seen_by_the_full_text_index(
    backend: str, scifact: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if True:
        small = {k: v[:50] for k, v in scifact.items() if k in ("ids", "texts", "x")}
        store = _build(backend, tmp_path / "upserted", small, _dsn(backend, request))
        first, second = small["ids"][:2]
        store.upsert(["new"], scifact["q"][:1], texts=["quokka thermoregulation in marsupials"])
        store.upsert([first], small["x"][:1], texts=["a wombat sleeps"])  # its old words leave it
        assert store.search("quokka", 5, mode="lexical").ids == [["new"]]
        assert store.search("wombat", 5, mode="lexical").ids == [[first]]
        old_word = max(small["texts"][0].split(), key=len)
        assert first not in store.search(old_word, 50, mode="lexical").ids[0]
        store.remove(["new", second])
        assert store.search("quokka", 5, mode="lexical").ids == [[]]
        hybrid = store.search(scifact["q"][:1], 50, mode="hybrid", query_texts=[small["texts"][1]])
        assert second not in hybrid.ids[0]
        if backend == "lancedb":
            store.optimize()  # the rows written since the index was built, folded in: the same answers
            assert store.search("wombat", 5, mode="lexical").ids == [[first]]
            assert store.search("quokka", 5, mode="lexical").ids == [[]]
        with pytest.raises(ValueError, match="needs the row texts"):
            store.add(["bare"], scifact["q"][:1])  # a lexical store keeps every row's text
        if backend == "pgvector":
            store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_without_a_lexical_part_refuses(
    backend: str, scifact: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = _build(backend, tmp_path / "dense", scifact, _dsn(backend, request), lexical=None)
    assert not store.has_lexical and plan_search(store, k=5).mode.value == "dense"
    for mode in ("lexical", "hybrid"):
        with pytest.raises(SearchNotOffered, match=f"this {backend} store has no lexical part"):
            plan_search(store, k=5, mode=mode)
        with pytest.raises(SearchNotOffered, match=f"--backend {backend} --lexical"):
            store.search(scifact["queries"], 5, mode=mode)
    assert len(store.search(scifact["q"], 5).ids[0]) == 5  # dense still
    with pytest.raises(ValueError, match="the memory backend's"):
        StoreSpec(backend=backend, lexical=LexicalConfig(k1=1.2))
    if backend == "pgvector":
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_index_lexical_then_search_hybrid(
    backend: str, tmp_path: Path, tiny_model_dir: Path, request: pytest.FixtureRequest, capsys: Any
) -> None:
    dsn = _dsn(backend, request)
    extra = ["--dsn", dsn] if dsn else []
    corpus, out = _corpus(tmp_path, n=40), tmp_path / "store"
    argv = ["-q", "index", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(out)]
    assert main([*argv, "--backend", backend, "--lexical", "--device", "cpu", "--table", "cli", *extra]) == 0
    capsys.readouterr()
    search = ["-q", "search", "--index", str(out), "--device", "cpu", "--json", "-k", "5", *extra]
    assert main([*search, "--mode", "hybrid", "the green fish"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert len(line["hits"]) == 5 and all("dense_score" in h and "text" in h for h in line["hits"])
    assert any(h["lexical_score"] is not None for h in line["hits"])
    assert main([*search, "--mode", "lexical", "fish"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits and all("fish" in h["text"] for h in hits)
    bad = ["-q", "index", "--corpus", str(corpus), "--output", str(tmp_path / "x"), "--backend", backend]
    assert main([*bad, "--model", str(tiny_model_dir), "--lexical", "--bm25-k1", "1.2", *extra]) == 1
    assert "--bm25-k1 set up the memory backend's BM25" in capsys.readouterr().err


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fusion_decision_uses_the_stores_own_rankers(
    backend: str, scifact: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The vectors are random, so dense finds no probe's target; each database's full-text side
    does (an abstract's other sentences share its terms), and the decision must show it: a min-max
    hybrid, weighed on the database's own lists, in a scratch store that is gone afterwards."""
    import zlib

    from biencoder.stores.build import choose_store_fusion

    dsn = _dsn(backend, request)
    spec = StoreSpec(backend=backend, dsn=dsn, lexical=LexicalConfig(), table="lex_decide")

    def encode(texts: list[str]) -> Any:
        rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM) for t in texts]
        return np.asarray(rows, dtype=np.float32)

    record = choose_store_fusion(
        spec, scifact["texts"], lambda rows: scifact["x"][rows], encode, dimension=DIM, probes=60
    )
    assert record.source == "chosen" and record.normalization == "minmax" and not record.adaptive
    assert record.evidence is not None and record.evidence["probes"] == 60
    assert record.alpha < 1.0 and record.evidence["mrr"][record.evidence["choice"]] > 0.3
    assert record.evidence["dense_mrr"] < 0.1
    if backend == "pgvector":
        import psycopg

        with psycopg.connect(dsn) as conn:
            left = conn.execute("SELECT to_regclass('lex_decide__probe')").fetchone()
        assert left == (None,)
    store = _build(backend, tmp_path / "store", scifact, dsn)
    store.set_fusion(record)
    reopened = open_store(tmp_path / "store", dsn=dsn)
    assert reopened.fusion_record == record  # type: ignore[attr-defined]
    got = reopened.search(scifact["q"], 10, query_texts=scifact["queries"], candidates=50)
    for n, (ids, _) in enumerate(_by_hand(reopened, scifact, 50, alpha=record.alpha, normalization="minmax")):
        assert got.ids[n] == ids
    if backend == "pgvector":
        store.close()  # type: ignore[attr-defined]
        reopened.close()  # type: ignore[attr-defined]


def test_a_large_batch_of_full_text_queries_spread_over_connections_equals_one_connection(
    scifact: Any, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biencoder.stores import pgvector

    store = _build("pgvector", tmp_path / "batch", scifact, _dsn("pgvector", request))
    try:
        texts = [f"{q} {w}" for q in scifact["queries"] for w in ("", "cell", "protein", "risk")]  # 40
        monkeypatch.setattr(pgvector, "LEXICAL_BATCH_PER_WORKER", 10**9)
        serial = store.search(texts, 20, mode="lexical")
        monkeypatch.setattr(pgvector, "LEXICAL_BATCH_PER_WORKER", 8)
        monkeypatch.setattr(pgvector.os, "cpu_count", lambda: 3)  # 3 connections, interleaved chunks
        opened: list[str] = []
        real_connect = pgvector.connect
        monkeypatch.setattr(pgvector, "connect", lambda dsn: opened.append(dsn) or real_connect(dsn))
        spread = store.search(texts, 20, mode="lexical")
        assert len(opened) == 3
        assert spread.ids == serial.ids and len(set(map(tuple, serial.ids))) > 10
        np.testing.assert_array_equal(np.asarray(spread.scores), np.asarray(serial.scores))
    finally:
        store.drop()
        store.close()
