"""`biencoder index` (with resume after an interruption) and `biencoder search`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biencoder.cli import main
from biencoder.index import Index
from tests.numerics import EMBEDDING_ATOL

WORDS = ["cat", "dog", "fish", "bird", "tree", "house", "car", "water", "fire", "earth"]


def _corpus(tmp_path: Path, n: int = 23) -> Path:
    path = tmp_path / "corpus.jsonl"
    rows = [
        {
            "_id": f"doc{i}",
            "title": WORDS[i % 10],
            "text": f"the {WORDS[(i * 3) % 10]} is {WORDS[(i * 7) % 10]}",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_index_then_search(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from biencoder import SentenceEncoder

    corpus = _corpus(tmp_path)
    out = tmp_path / "ix"
    argv = ["-q", "index", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(out)]
    assert main([*argv, "--shard-size", "5", "--device", "cpu"]) == 0
    assert not (tmp_path / "ix.partial").exists()
    index = Index.load(out)
    assert len(index) == 23 and index.ids[0] == "doc0"
    enc = SentenceEncoder.load(tiny_model_dir, device="cpu")
    # the BEIR text is title + " " + text
    row = json.loads(corpus.read_text().splitlines()[1])
    expected_text = row["title"] + " " + row["text"]
    # built in shards of 5 texts, compared with one text alone: another batch shape, the contract's bound
    np.testing.assert_allclose(index.get("doc1"), enc.encode([expected_text])[0], atol=EMBEDDING_ATOL)

    assert main(["-q", "search", "--index", str(out), "-k", "3", "--json", "the cat is fire"]) == 0
    single = json.loads(capsys.readouterr().out)
    expected = Index.load(out, encoder=enc).search("the cat is fire", 3)
    assert [h["id"] for h in single["hits"]] == expected.ids[0]

    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": "a big dog"}\n{"_id": "q2", "text": "water fire"}\n')
    result = tmp_path / "hits.jsonl"
    assert (
        main(["-q", "search", "--index", str(out), "--queries", str(queries), "--output", str(result)]) == 0
    )
    lines = [json.loads(line) for line in result.read_text().splitlines()]
    assert [line["query_id"] for line in lines] == ["q1", "q2"]
    assert len(lines[0]["hits"]) == 10 and set(lines[0]["hits"][0]) == {"id", "score"}
    expected = Index.load(out, encoder=enc).search(["a big dog", "water fire"], 10)
    assert [[h["id"] for h in line["hits"]] for line in lines] == expected.ids

    txt = tmp_path / "q.txt"
    txt.write_text("a big dog\n\nwater fire\n")
    assert main(["-q", "search", "--index", str(out), "--queries", str(txt), "--output", str(result)]) == 0
    assert [json.loads(x)["query_id"] for x in result.read_text().splitlines()] == ["1", "3"]


def test_store_texts_then_search_returns_them(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "ix"
    argv = ["-q", "index", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(out)]
    assert main([*argv, "--shard-size", "5", "--device", "cpu", "--store-texts"]) == 0
    row = json.loads(corpus.read_text().splitlines()[1])
    assert Index.load(out).texts_of(["doc1"]) == [row["title"] + " " + row["text"]]
    assert main(["-q", "search", "--index", str(out), "-k", "2", "--json", "the cat is fire"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert all(set(h) == {"id", "score", "text"} and h["text"] for h in hits)


def test_interrupted_build_resumes(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biencoder.encoder import SentenceEncoder

    corpus = _corpus(tmp_path)
    out = tmp_path / "ix"
    argv = [
        "-q",
        "index",
        "--model",
        str(tiny_model_dir),
        "--corpus",
        str(corpus),
        "--output",
        str(out),
        "--shard-size",
        "5",
        "--device",
        "cpu",
    ]
    real_encode = SentenceEncoder.encode
    calls: list[int] = []

    def flaky(self: SentenceEncoder, texts: list[str], *a: object, **kw: object) -> np.ndarray:
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the third shard
        return real_encode(self, texts, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(SentenceEncoder, "encode", flaky)
    assert main(argv) == 130
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "ix.partial").glob("shard_*.npy")) == [
        "shard_00000.npy",
        "shard_00001.npy",
    ]
    calls.clear()
    monkeypatch.setattr(
        SentenceEncoder,
        "encode",
        lambda self, texts, *a, **kw: (calls.append(len(texts)), real_encode(self, texts, *a, **kw))[1],
    )
    assert main(argv) == 0
    assert calls == [5, 5, 3]  # only the three unfinished shards
    fresh = tmp_path / "fresh"
    assert main([*argv[:-5], str(fresh), "--shard-size", "5", "--device", "cpu"]) == 0
    a, b = Index.load(out), Index.load(fresh)
    assert a.ids == b.ids
    np.testing.assert_array_equal(np.asarray(a._blocks[0]), np.asarray(b._blocks[0]))


def test_cli_errors(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--index", str(tmp_path / "missing"), "q"]) == 1
    assert "index folder not found" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    assert main(["search", "--index", str(tmp_path / "half"), "q"]) == 1
    assert "half: neither manifest.json (an in-process index) nor store.json" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path / "half")]) == 1
    assert "either one query or --queries" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    argv = ["index", "--model", str(tiny_model_dir), "--corpus", str(bad), "--output", str(tmp_path / "o")]
    assert main(argv) == 1
    assert "duplicate id 'a'" in capsys.readouterr().err
