"""The store contract: the in-process Index, LanceDB and pgvector answer add/upsert, remove,
search, count and dimension alike, and reject bad input alike."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.index import Index, IndexConfig
from biencoder.stores import StoreFormatError, StoreManifest, VectorStore, backend_of, open_store
from tests.numerics import assert_same_ranking, dot_atol

DIM = 16
_tables = itertools.count()


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def make_store(backend: str, folder: Path, request: pytest.FixtureRequest, metric: str = "cosine") -> Any:
    if backend == "memory":
        return Index(DIM, config=IndexConfig(metric=metric))
    if backend == "lancedb":
        pytest.importorskip("lancedb")
        from biencoder.stores.lance import LanceStore

        return LanceStore.create(folder, dimension=DIM, metric=metric)
    dsn = request.getfixturevalue("pg_dsn")
    from biencoder.stores.pgvector import PgVectorStore

    return PgVectorStore.create(folder, dimension=DIM, metric=metric, dsn=dsn, table=f"t{next(_tables)}")


@pytest.fixture(params=["memory", "lancedb", "pgvector"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = make_store(request.param, tmp_path / "store", request)
    yield s
    if hasattr(s, "close"):
        s.close()


def test_every_backend_answers_the_protocol(store: Any) -> None:
    assert isinstance(store, VectorStore)
    assert store.dimension == DIM and store.count == 0 and store.metric == "cosine"


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("backend", ["lancedb", "pgvector"])
def test_exact_search_equals_the_index(
    backend: str, metric: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    x, q = _vectors(500), _vectors(12, seed=1)
    ids = [f"d{i}" for i in range(500)]
    reference = Index(DIM, config=IndexConfig(metric=metric))
    reference.add(ids, x)
    store = make_store(backend, tmp_path / "s", request, metric)
    assert store.ingest((ids[s : s + 128], x[s : s + 128], None) for s in range(0, 500, 128)) == 500
    got, want = store.search(q, 10), reference.search(q, 10)
    # Each database scores in its own kernel (pgvector in float64 from the float32 vectors,
    # LanceDB as 1 - distance), ours in float32 BLAS: at most a float32 dot product's error
    # apart, 16 terms scaled by |x| |q| (1 for cosine); never below the score contract 1e-5.
    scale = (
        1.0
        if metric == "cosine"
        else float(np.linalg.norm(x, axis=1).max() * np.linalg.norm(q, axis=1).max())
    )
    atol = max(1e-5, dot_atol(DIM, scale))
    for g_ids, g_scores, w_ids, w_scores in zip(got.ids, got.scores, want.ids, want.scores, strict=True):
        assert_same_ranking(g_ids, g_scores, w_ids, w_scores, atol)


def test_upsert_remove_and_texts_behave_like_the_index(store: Any) -> None:
    x = _vectors(40)
    ids = [f"d{i}" for i in range(40)]
    store.add(ids[:30], x[:30])
    store.upsert(
        ["d0", *ids[30:]], np.vstack([-x[0:1], x[30:]]), texts=["zero", *[f"t{i}" for i in range(30, 40)]]
    )
    assert store.count == 40
    assert store.search(-x[0:1], 1).ids == [["d0"]]  # replaced, not duplicated
    assert store.has_texts and store.texts_of(["d0", "d31", "d5"]) == ["zero", "t31", None]
    store.remove(["d0", "d1"])
    assert store.count == 38
    assert "d0" not in store.search(-x[0:1], 38).ids[0]
    with pytest.raises(KeyError, match="1 ids not in"):
        store.remove(["d2", "nope"])
    assert store.count == 38  # a failed remove removes nothing


@pytest.mark.parametrize(
    ("ids", "data", "error", "match"),
    [
        (["a", "a"], _vectors(2), ValueError, "duplicate id 'a'"),
        (["a"], _vectors(2), ValueError, "1 ids but 2 vectors"),
        (["a"], np.ones((1, DIM + 1), np.float32), ValueError, "dimension mismatch"),
        (["a"], np.full((1, DIM), np.nan, np.float32), ValueError, "NaN"),
        (["a"], ["some text"], ValueError, "no encoder"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(
    store: Any, ids: list[str], data: Any, error: type[Exception], match: str
) -> None:
    store.add(["keep"], _vectors(1))
    with pytest.raises(error, match=match):
        store.add(ids, data)
    assert store.count == 1


def test_bad_k_and_queries(store: Any) -> None:
    store.add(["a", "b"], _vectors(2))
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            store.search(_vectors(1), k)
    with pytest.raises(ValueError, match="dimension mismatch"):
        store.search(np.ones((1, 3), np.float32), 1)


def test_texts_need_an_encoder_and_are_encoded_with_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("lancedb")
    from biencoder import SentenceEncoder
    from biencoder.stores.lance import LanceStore

    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    store = LanceStore.create(tmp_path / "s", dimension=encoder.dimension, encoder=encoder)
    store.add(["a", "b"], ["the cat sat", "a dog ran"])
    np.testing.assert_allclose(store.search("the cat sat", 1).scores[0][0], 1.0, atol=1e-5)
    assert store.search(encoder.encode(["a dog ran"]), 1).ids == [["b"]]


@pytest.mark.parametrize("backend", ["lancedb", "pgvector"])
def test_the_folder_says_which_backend(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store = make_store(backend, tmp_path / "s", request)
    store.add(["a", "b"], _vectors(2))
    assert backend_of(tmp_path / "s") == backend
    dsn = request.getfixturevalue("pg_dsn") if backend == "pgvector" else None
    again = open_store(tmp_path / "s", dsn=dsn)
    assert again.backend == backend and again.count == 2 and again.dimension == DIM
    index = Index(DIM)
    index.add(["x"], _vectors(1))
    index.save(tmp_path / "m")
    assert backend_of(tmp_path / "m") == "memory" and open_store(tmp_path / "m").count == 1


def test_folders_that_are_not_stores(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        open_store(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreFormatError, match=r"neither manifest\.json"):
        open_store(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "store.json").write_text('{"format": 1, "backend": "lancedb", "dimension": 0}')
    with pytest.raises(StoreFormatError, match="dimension must be a positive integer"):
        open_store(tmp_path / "bad")
    (tmp_path / "bad" / "store.json").write_text("{not json")
    with pytest.raises(StoreFormatError, match="unreadable"):
        open_store(tmp_path / "bad")


def test_manifest_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="ranks by cosine, dot"):
        StoreManifest(backend="pgvector", dimension=4, metric="manhattan")
    with pytest.raises(ValueError, match="table name"):
        StoreManifest(backend="lancedb", dimension=4, table="x; DROP TABLE y")
    with pytest.raises(ValueError, match="unknown store backend"):
        StoreManifest(backend="qdrant", dimension=4)


def test_pgvector_without_a_connection_says_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg")
    from biencoder.stores.pgvector import PgVectorStore

    monkeypatch.delenv("BIENCODER_PG_DSN", raising=False)
    with pytest.raises(ValueError, match="pass --dsn or set BIENCODER_PG_DSN"):
        PgVectorStore.create(tmp_path / "s", dimension=4)
    with pytest.raises(ConnectionError, match="cannot connect to PostgreSQL"):
        PgVectorStore.create(tmp_path / "s", dimension=4, dsn="postgresql://nobody@127.0.0.1:1/none")


@pytest.mark.parametrize("backend", ["lancedb", "pgvector"])
def test_an_ingest_that_fails_part_way_leaves_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = make_store(backend, tmp_path / "s", request)
    x = _vectors(6)
    bad = np.ones((2, DIM + 1), np.float32)
    with pytest.raises(ValueError, match="dimension mismatch"):
        store.ingest(iter([(["a", "b", "c"], x[:3], None), (["d", "e"], bad, None)]))
    assert store.count == 0
    if backend == "pgvector":  # the primary key: an id twice aborts the COPY
        with pytest.raises(ValueError, match="already in the table"):
            store.ingest(iter([(["a", "b", "c"], x[:3], None), (["d", "a"], x[3:5], None)]))
        assert store.count == 0
    assert store.ingest(iter([(["a", "b"], x[:2], None)])) == 2
