"""`biencoder index --backend lancedb|pgvector` and `biencoder search` on the folders they write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biencoder.cli import main
from biencoder.index import Index
from biencoder.stores import open_store
from tests.index.test_cli import _corpus


def _build(tmp_path: Path, model: Path, backend: str, *extra: str) -> tuple[Path, Path]:
    corpus = _corpus(tmp_path, n=300)
    out = tmp_path / backend
    argv = ["-q", "index", "--model", str(model), "--corpus", str(corpus), "--output", str(out)]
    assert main([*argv, "--backend", backend, "--device", "cpu", "--shard-size", "70", *extra]) == 0
    return corpus, out


@pytest.mark.parametrize("backend", ["lancedb", "pgvector"])
def test_index_and_search_equal_the_memory_backend(
    backend: str, tmp_path: Path, tiny_model_dir: Path, request: pytest.FixtureRequest
) -> None:
    extra = ["--dsn", request.getfixturevalue("pg_dsn")] if backend == "pgvector" else []
    if backend == "lancedb":
        pytest.importorskip("lancedb")
    _, memory = _build(tmp_path, tiny_model_dir, "memory", "--store-texts")
    _, store = _build(tmp_path, tiny_model_dir, backend, "--store-texts", *extra)
    assert not (tmp_path / f"{backend}.partial").exists()
    queries = tmp_path / "q.txt"
    queries.write_text("the cat is dog\nwater fire\nthe tree is house\n")
    outs = {}
    for name, folder in (("memory", memory), (backend, store)):
        outs[name] = tmp_path / f"{name}.jsonl"
        argv = ["-q", "search", "--index", str(folder), "--queries", str(queries), "-k", "5"]
        assert main([*argv, "--output", str(outs[name]), "--device", "cpu", *extra]) == 0
    want = [json.loads(line) for line in outs["memory"].read_text().splitlines()]
    got = [json.loads(line) for line in outs[backend].read_text().splitlines()]
    for g, w in zip(got, want, strict=True):
        assert [h["text"] for h in g["hits"]] == [h["text"] for h in w["hits"]]  # ids may tie: texts equal
        np.testing.assert_allclose(
            [h["score"] for h in g["hits"]], [h["score"] for h in w["hits"]], atol=1e-5
        )


def test_vector_shards_are_ingested_without_encoding(tmp_path: Path) -> None:
    pytest.importorskip("lancedb")
    x = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    index = Index(8)
    index.add([f"d{i}" for i in range(600)], x)
    shards = tmp_path / "vectors"
    shards.mkdir()
    index.export_parquet(shards / "part-0.parquet")
    out = tmp_path / "lance"
    argv = ["-q", "index", "--vectors", str(shards), "--output", str(out), "--backend", "lancedb"]
    assert main([*argv, "--kind", "ivf_hnsw_sq", "--partitions", "2"]) == 0
    store = open_store(out)
    assert store.count == 600 and store.kind == "ivf_hnsw_sq"
    assert store.search(x[:20], 1).ids == [[f"d{i}"] for i in range(20)]


def test_a_failed_pgvector_rebuild_keeps_the_previous_table(tmp_path: Path, pg_dsn: str) -> None:
    good = tmp_path / "good"
    good.mkdir()
    index = Index(8)
    index.add([f"d{i}" for i in range(50)], np.random.default_rng(0).standard_normal((50, 8)))
    index.export_parquet(good / "part-0.parquet")
    out = tmp_path / "pg"
    argv = ["-q", "index", "--output", str(out), "--backend", "pgvector", "--dsn", pg_dsn, "--table", "kept"]
    assert main([*argv, "--vectors", str(good)]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    index.export_parquet(bad / "part-0.parquet")
    index.export_parquet(bad / "part-1.parquet")  # the same ids again: the COPY fails on the key
    assert main([*argv, "--vectors", str(bad)]) == 1
    store = open_store(out, dsn=pg_dsn)
    assert store.count == 50 and store.manifest.table == "kept"


def test_backend_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["index", "--vectors", str(tmp_path), "--output", str(tmp_path / "o")]
    assert main([*argv, "--backend", "pgvector", "--kind", "ivf_pq"]) == 1
    assert "the pgvector backend builds exact, hnsw, not 'ivf_pq'" in capsys.readouterr().err
    assert main([*argv, "--backend", "lancedb", "--quantization", "int8"]) == 1
    assert "--quantization is the memory backend's" in capsys.readouterr().err
    assert main([*argv, "--backend", "lancedb"]) == 1
    assert "no Parquet vector shards" in capsys.readouterr().err
