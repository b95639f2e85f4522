"""/v1/search in the index's modes: the server's hits are the library's and the CLI's for the same store,
its refusals are 4xx that say what to do, /info tells the modes."""

from __future__ import annotations

import base64
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.cli import main
from biencoder.index import Fusion, FusionRecord, Index, SearchMode
from biencoder.serve import schemas as s
from tests.numerics import CROSS_RUNTIME_ATOL, assert_same_ranking, cosine_atol

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

WORDS = ["cat", "dog", "fish", "bird", "tree", "house", "car", "water", "fire", "earth", "river", "green"]
QUERIES = ["the green river", "a fast car on fire", "dogs and cats", "the of and"]  # the last: stop words


@pytest.fixture(scope="module")
def stores(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One corpus indexed by `biencoder index` with the served model: with and without a lexical part."""
    folder = tmp_path_factory.mktemp("hybrid-serve")
    corpus = folder / "corpus.jsonl"
    rng = random.Random(1)
    texts: dict[str, None] = {}  # every text different: no tied rows on either side
    while len(texts) < 30:
        texts[" ".join(rng.choice([*WORDS, "the", "and", "by"]) for _ in range(rng.randint(3, 6)))] = None
    rows = [{"_id": f"doc{i}", "title": WORDS[i % 12], "text": t} for i, t in enumerate(texts)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["-q", "index", "--model", str(tiny_onnx), "--corpus", str(corpus), "--device", "cpu"]
    assert main([*argv, "--output", str(folder / "lexical"), "--lexical"]) == 0
    assert main([*argv, "--output", str(folder / "dense")]) == 0
    queries = folder / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(QUERIES)))
    return {"lexical": folder / "lexical", "dense": folder / "dense", "queries": queries}


@pytest.fixture(scope="module")
def served(tiny_onnx: Path) -> Any:
    from biencoder.serve.model import load_served_model

    return load_served_model(str(tiny_onnx))


def _client(served: Any, store: Any) -> Any:
    from starlette.testclient import TestClient

    from biencoder.serve.app import create_app
    from biencoder.serve.config import ServeConfig

    return TestClient(create_app(served, ServeConfig(model=str(served.folder)), store))


@pytest.fixture(scope="module")
def lexical_client(served: Any, stores: dict[str, Path]) -> Iterator[Any]:
    with _client(served, Index.load(stores["lexical"])) as client:
        yield client


@pytest.fixture(scope="module")
def dense_client(served: Any, stores: dict[str, Path]) -> Iterator[Any]:
    with _client(served, Index.load(stores["dense"])) as client:
        yield client


def _served_vectors(client: Any, texts: list[str]) -> np.ndarray:
    """The query vectors the server makes (exact float32 bytes, base64)."""
    body = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])


def _without_text(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k != "text"} for h in hits]


MODES = [
    (SearchMode.DENSE, None, None),
    (SearchMode.LEXICAL, None, None),
    (SearchMode.HYBRID, Fusion.CONVEX, None),
    (SearchMode.HYBRID, Fusion.CONVEX, 0.3),
    (SearchMode.HYBRID, Fusion.RRF, None),
]


@pytest.mark.parametrize(("mode", "fusion", "alpha"), MODES)
def test_server_cli_and_python_agree(
    lexical_client: Any,
    stores: dict[str, Path],
    tiny_onnx: Path,
    tmp_path: Path,
    mode: SearchMode,
    fusion: Fusion | None,
    alpha: float | None,
) -> None:
    from biencoder import SentenceEncoder

    options: dict[str, Any] = {"mode": mode.value}
    options.update({"fusion": fusion.value} if fusion else {})
    options.update({"alpha": alpha} if alpha is not None else {})
    r = lexical_client.post("/v1/search", json={"queries": QUERIES, "k": 10, **options})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == mode.value
    s.SearchResponse.model_validate(body)  # the body the OpenAPI document declares
    # the server against the library, given the server's own query vectors: exactly equal
    index = Index.load(stores["lexical"])
    if mode is SearchMode.LEXICAL:
        want = index.search(QUERIES, 10, **options)
        assert body["usage"]["prompt_tokens"] == 0  # nothing embedded
    else:
        words: dict[str, Any] = {"query_texts": QUERIES} if mode is SearchMode.HYBRID else {}
        want = index.search(_served_vectors(lexical_client, QUERIES), 10, **options, **words)
    for n, item in enumerate(body["data"]):
        assert _without_text(item["hits"]) == want.hits(n)
        assert item.get("note") == (want.notes[n] if want.notes else None)
        assert [h["text"] for h in item["hits"]] == index.texts_of([h["id"] for h in item["hits"]])
    if mode is SearchMode.HYBRID:
        assert all({"dense_score", "lexical_score"} <= set(h) for d in body["data"] for h in d["hits"])

    # the CLI against the library with the CLI's encoder (the model's torch runtime): exactly equal
    out = tmp_path / "hits.jsonl"
    flags = [f"--{name}={value}" for name, value in options.items()]
    argv = [
        "-q",
        "search",
        "--index",
        str(stores["lexical"]),
        "--queries",
        str(stores["queries"]),
        "-o",
        str(out),
    ]
    assert main([*argv, *flags, "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    encoder = SentenceEncoder.load(tiny_onnx, device="cpu")
    cli_want = Index.load(stores["lexical"], encoder=encoder).search(QUERIES, 10, **options)
    for n, line in enumerate(lines):
        assert _without_text(line["hits"]) == cli_want.hits(n)
        assert line.get("note") == (cli_want.notes[n] if cli_want.notes else None)

    # across the two runtimes: lexical is the same arithmetic; dense within the runtimes' contract
    if mode is SearchMode.LEXICAL:
        assert [_without_text(d["hits"]) for d in body["data"]] == [_without_text(x["hits"]) for x in lines]
    elif mode is SearchMode.DENSE:
        atol = cosine_atol(CROSS_RUNTIME_ATOL, encoder.dimension)
        for item, line in zip(body["data"], lines, strict=True):
            got, ref = item["hits"], line["hits"]
            assert_same_ranking(
                [h["id"] for h in got],
                [h["score"] for h in got],
                [h["id"] for h in ref],
                [h["score"] for h in ref],
                atol,
            )


def test_stopword_query_in_hybrid_gives_the_dense_hits_with_a_note(lexical_client: Any) -> None:
    hybrid = lexical_client.post("/v1/search", json={"query": "the of and", "mode": "hybrid"}).json()
    dense = lexical_client.post("/v1/search", json={"query": "the of and", "mode": "dense"}).json()
    item = hybrid["data"][0]
    assert "no lexical match" in item["note"] and "dense results only" in item["note"]
    assert [h["id"] for h in item["hits"]] == [h["id"] for h in dense["data"][0]["hits"]]
    assert all(h["lexical_score"] is None and h["dense_score"] == h["score"] for h in item["hits"])
    assert "note" not in dense["data"][0]
    lexical = lexical_client.post("/v1/search", json={"query": "the of and", "mode": "lexical"}).json()
    assert lexical["data"][0]["hits"] == [] and "no lexical match" in lexical["data"][0]["note"]


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"query": "green", "mode": "fuzzy"}, "mode", "'dense', 'lexical' or 'hybrid'"),
        ({"query": "green", "mode": 3}, "mode", "'dense', 'lexical' or 'hybrid'"),
        ({"query": "green", "fusion": "sum"}, "fusion", "'convex' or 'rrf'"),
        ({"query": "green", "alpha": -0.1}, "alpha", "greater than or equal to 0"),
        ({"query": "green", "alpha": 1.5}, "alpha", "less than or equal to 1"),
        ({"query": "green", "alpha": "0.5"}, "alpha", "valid number"),
        ({"query": "green", "fusion": "rrf", "alpha": 0.5}, None, "alpha weighs convex fusion"),
        ({"query": "green", "candidates": 0}, "candidates", "greater than or equal to 1"),
        ({"query": ""}, "query", "empty string"),
        ({"queries": ["green", "  "], "mode": "lexical"}, "queries", "`queries[1]` holds no words"),
        ({"query": " ", "mode": "hybrid"}, "query", "`query[0]` holds no words"),
    ],
)  # fmt: skip
def test_bad_values_are_422(lexical_client: Any, body: dict[str, Any], param: str | None, says: str) -> None:
    r = lexical_client.post("/v1/search", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"], error


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_lexical_modes_on_an_index_without_a_lexical_part_are_400(dense_client: Any, mode: str) -> None:
    r = dense_client.post("/v1/search", json={"query": "green river", "mode": mode})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "mode" and error["code"] == "mode_not_available"
    assert "no lexical part: build it with `biencoder index ... --lexical`" in error["message"]
    dense = dense_client.post("/v1/search", json={"query": "green river", "alpha": 0.4}).json()
    assert dense["mode"] == "dense" and len(dense["data"][0]["hits"]) == 10
    assert set(dense["data"][0]["hits"][0]) == {"id", "score"}  # no text kept, no side scores


def test_info_tells_the_modes_and_the_tuned_alpha(
    lexical_client: Any, dense_client: Any, served: Any, stores: dict[str, Path], tmp_path: Path
) -> None:
    from biencoder.index.persist import read_fusion_record, write_fusion_record

    info = lexical_client.get("/info").json()
    s.Info.model_validate(info)
    chosen = read_fusion_record(stores["lexical"])  # `biencoder index --lexical` decided it
    assert chosen is not None and chosen.source == "chosen" and chosen.evidence is not None
    search = info["search"]
    assert {k: search[k] for k in ("modes", "default_mode", "has_lexical", "fusion_alpha")} == {
        "modes": ["dense", "lexical", "hybrid"],
        "default_mode": "hybrid",
        "has_lexical": True,
        "fusion_alpha": chosen.alpha,
    }
    assert search["fusion"]["source"] == "chosen" and search["fusion"]["reason"] == chosen.evidence["reason"]
    assert search["fusion"]["evidence"]["probes"] == chosen.evidence["probes"]
    assert dense_client.get("/info").json()["search"] == {
        "modes": ["dense"],
        "default_mode": "dense",
        "has_lexical": False,
        "fusion_alpha": None,
        "fusion": None,
    }
    tuned = tmp_path / "tuned"
    shutil.copytree(stores["lexical"], tuned)
    write_fusion_record(tuned, FusionRecord(alpha=0.25, grid=(0.25, 0.5)))
    with _client(served, Index.load(tuned)) as client:
        tuned_info = client.get("/info").json()["search"]
        assert tuned_info["fusion_alpha"] == 0.25 and tuned_info["fusion"]["source"] == "tuned"
        assert tuned_info["fusion"]["evidence"]["grid"] == [0.25, 0.5]
        body = client.post("/v1/search", json={"queries": QUERIES[:2]}).json()  # default: the record's
        vectors = _served_vectors(client, QUERIES[:2])
    want = Index.load(tuned).search(vectors, 10, query_texts=QUERIES[:2])
    chosen_result = Index.load(stores["lexical"]).search(vectors, 10, query_texts=QUERIES[:2])
    assert body["mode"] == want.mode == "hybrid" and want.scores != chosen_result.scores
    assert [_without_text(d["hits"]) for d in body["data"]] == [want.hits(n) for n in range(2)]


def test_a_lancedb_store_searches_dense_and_refuses_the_lexical_modes(
    served: Any, stores: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("lancedb")
    from biencoder.stores import open_store
    from biencoder.stores.lance import LanceStore

    index = Index.load(stores["dense"])
    LanceStore.create(tmp_path / "lance", dimension=index.dim or 0, model_name=index.model_name).add(
        index.ids, np.stack([index.get(i) for i in index.ids])
    )
    with _client(served, open_store(tmp_path / "lance")) as client:
        for mode in ("lexical", "hybrid"):
            r = client.post("/v1/search", json={"query": "green river", "mode": mode})
            assert r.status_code == 400, r.text
            assert "lancedb store has no lexical part" in r.json()["error"]["message"]
        ok = client.post("/v1/search", json={"query": "green river", "mode": "dense", "k": 3})
        assert ok.status_code == 200 and len(ok.json()["data"][0]["hits"]) == 3
        assert client.get("/info").json()["search"]["modes"] == ["dense"]
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "lance"), "--mode", "hybrid", "green river"]) == 1
    assert "lancedb store has no lexical part" in capsys.readouterr().err
