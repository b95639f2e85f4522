"""`biencoder index --lexical` and `biencoder search --mode/--fusion/--alpha`: the CLI's hits are the
library's (same store, same encoder, same batch), its refusals say what to do."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from biencoder.cli import main
from biencoder.index import Fusion, Index, SearchMode

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

WORDS = ["cat", "dog", "fish", "bird", "tree", "house", "car", "water", "fire", "earth", "river", "green"]
QUERIES = ["the green river", "a fast car on fire", "dogs and cats", "the of and"]  # the last: stop words
STOPWORDS_ONLY = 3


def _corpus(folder: Path, n: int = 30) -> Path:
    """BEIR rows of a few words each, every text different (no tied rows on either side)."""
    rng = random.Random(0)
    texts: dict[str, None] = {}
    while len(texts) < n:
        texts[" ".join(rng.choice([*WORDS, "the", "and", "by"]) for _ in range(rng.randint(3, 6)))] = None
    rows = [{"_id": f"doc{i}", "title": WORDS[i % 12], "text": t} for i, t in enumerate(texts)]
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """The same corpus as a store with a lexical part and one without."""
    folder = tmp_path_factory.mktemp("hybrid-cli")
    corpus = _corpus(folder)
    argv = ["-q", "index", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--device", "cpu"]
    assert main([*argv, "--output", str(folder / "lexical"), "--lexical", "--shard-size", "7"]) == 0
    assert main([*argv, "--output", str(folder / "dense")]) == 0
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, q in enumerate(QUERIES))
    )
    return {"lexical": folder / "lexical", "dense": folder / "dense", "queries": folder / "queries.jsonl"}


@pytest.fixture(scope="module")
def reference(stores: dict[str, Path], tiny_model_dir: Path) -> Index:
    from biencoder import SentenceEncoder

    return Index.load(stores["lexical"], encoder=SentenceEncoder.load(tiny_model_dir, device="cpu"))


def test_index_lexical_builds_the_part_from_the_encoded_texts(
    stores: dict[str, Path], tmp_path: Path, tiny_model_dir: Path
) -> None:
    index = Index.load(stores["lexical"])
    assert index.has_lexical and index.lexical_config is not None
    assert (index.lexical_config.language, index.lexical_config.stopwords) == ("english", "en")
    row = json.loads((stores["lexical"].parent / "corpus.jsonl").read_text().splitlines()[4])
    assert index.texts_of(["doc4"]) == [row["title"] + " " + row["text"]]  # BEIR title + " " + text
    assert not Index.load(stores["dense"]).has_lexical
    out = tmp_path / "tuned"
    argv = [
        "-q",
        "index",
        "--model",
        str(tiny_model_dir),
        "--corpus",
        str(stores["lexical"].parent / "corpus.jsonl"),
    ]
    flags = ["--lexical", "--lexical-language", "none", "--lexical-stopwords", "none", "--bm25-k1", "1.2"]
    assert main([*argv, "--output", str(out), *flags, "--bm25-b", "0.5"]) == 0
    config = Index.load(out).lexical_config
    assert config is not None
    assert (config.language, config.stopwords, config.k1, config.b) == (None, None, 1.2, 0.5)


MODES = [
    (SearchMode.DENSE, None, None),
    (SearchMode.LEXICAL, None, None),
    (SearchMode.HYBRID, Fusion.CONVEX, None),
    (SearchMode.HYBRID, Fusion.CONVEX, 0.3),
    (SearchMode.HYBRID, Fusion.RRF, None),
]


@pytest.mark.parametrize(("mode", "fusion", "alpha"), MODES)
def test_search_file_and_single_query_equal_the_library(
    stores: dict[str, Path],
    reference: Index,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mode: SearchMode,
    fusion: Fusion | None,
    alpha: float | None,
) -> None:
    flags = ["--mode", mode.value]
    flags += ["--fusion", fusion.value] if fusion else []
    flags += ["--alpha", str(alpha)] if alpha is not None else []
    out = tmp_path / "hits.jsonl"
    argv = ["-q", "search", "--index", str(stores["lexical"]), *flags]
    assert main([*argv, "--queries", str(stores["queries"]), "--output", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    want = reference.search(QUERIES, 10, mode=mode, fusion=fusion, alpha=alpha)
    assert want.mode == mode.value
    for n, line in enumerate(lines):
        hits = [{k: v for k, v in h.items() if k != "text"} for h in line["hits"]]
        assert hits == want.hits(n)  # ids, scores and (hybrid) each side's score, exactly
        assert line.get("note") == (want.notes[n] if want.notes else None)
    assert (lines[STOPWORDS_ONLY].get("note") is not None) == (mode is not SearchMode.DENSE)
    if mode is SearchMode.HYBRID:
        assert set(lines[0]["hits"][0]) == {"id", "score", "dense_score", "lexical_score", "text"}

    capsys.readouterr()
    assert main([*argv, "--json", QUERIES[0]]) == 0
    single = json.loads(capsys.readouterr().out)
    one = reference.search([QUERIES[0]], 10, mode=mode, fusion=fusion, alpha=alpha)
    assert [{k: v for k, v in h.items() if k != "text"} for h in single["hits"]] == one.hits(0)


def test_default_mode_is_hybrid_with_a_lexical_part_else_dense(
    stores: dict[str, Path], reference: Index, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from biencoder import SentenceEncoder

    out = tmp_path / "hits.jsonl"
    for store, index in (
        (stores["lexical"], reference),
        (stores["dense"], Index.load(stores["dense"], encoder=SentenceEncoder.load(tiny_model_dir))),
    ):
        argv = ["-q", "search", "--index", str(store), "--queries", str(stores["queries"]), "-o", str(out)]
        assert main(argv) == 0
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        want = index.search(QUERIES, 10)
        assert want.mode == ("hybrid" if index.has_lexical else "dense")
        assert [[h["id"] for h in line["hits"]] for line in lines] == want.ids


def test_lexical_search_loads_no_model(
    stores: dict[str, Path],
    reference: Index,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from biencoder.encoder import SentenceEncoder

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("lexical search loaded a model")

    monkeypatch.setattr(SentenceEncoder, "load", refuse)
    argv = ["-q", "search", "--index", str(stores["lexical"]), "--mode", "lexical", "--model", "/nowhere"]
    assert main([*argv, "--json", "green river"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in got["hits"]] == reference.search("green river", 10, mode="lexical").ids[0]


def test_stopword_query_gives_dense_hits_and_a_note(
    stores: dict[str, Path], reference: Index, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(stores["lexical"]), "the of and"]) == 0
    captured = capsys.readouterr()
    assert "note: no lexical match" in captured.err and "dense results only" in captured.err
    dense = reference.search(["the of and"], 10, mode="dense")
    printed = [line.split() for line in captured.out.splitlines()]
    assert [row[6] for row in printed] == dense.ids[0]  # rank, score, (dense x, lexical -), id
    assert all(row[5] == "-)" for row in printed)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a bad value of one flag
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "code", "says"),
    [
        (["--mode", "fuzzy"], 2, "--mode: invalid choice: 'fuzzy' (choose from"),
        (["--fusion", "sum"], 2, "--fusion: invalid choice: 'sum' (choose from"),
        (["--alpha", "-0.1"], 2, "--alpha: must be a number in [0, 1], got '-0.1'"),
        (["--alpha", "1.5"], 2, "--alpha: must be a number in [0, 1], got '1.5'"),
        (["--alpha", "half"], 2, "--alpha: must be a number in [0, 1], got 'half'"),
        (["--candidates", "0"], 2, "--candidates: must be a positive integer, got '0'"),
        (["--fusion", "rrf", "--alpha", "0.5"], 1, "alpha weighs convex fusion; rrf fusion takes none"),
    ],
)
def test_bad_search_values_are_refused(
    stores: dict[str, Path], capsys: pytest.CaptureFixture[str], flags: list[str], code: int, says: str
) -> None:
    got, err = _fails(["search", "--index", str(stores["lexical"]), *flags, "green"], capsys)
    assert got == code and says in err, err
    if "invalid choice" in says:  # the valid ones named (quoted or not, by the Python version)
        valid = [m.value for m in (SearchMode if flags[0] == "--mode" else Fusion)]
        assert all(v in err.split("choose from")[1] for v in valid), err


def test_lexical_modes_without_a_lexical_part_and_empty_queries_are_refused(
    stores: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for mode in ("lexical", "hybrid"):
        code, err = _fails(["search", "--index", str(stores["dense"]), "--mode", mode, "green"], capsys)
        assert code == 1 and "has no lexical part: build it with `biencoder index ... --lexical`" in err
    for query in ("", "   "):
        code, err = _fails(["search", "--index", str(stores["lexical"]), query], capsys)
        assert code == 1 and "the query is empty" in err
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"_id": "q1", "text": "green"}\n{"_id": "q2", "text": " "}\n')
    argv = [
        "search",
        "--index",
        str(stores["lexical"]),
        "--queries",
        str(blank),
        "-o",
        str(tmp_path / "o.jsonl"),
    ]
    code, err = _fails(argv, capsys)
    assert code == 1 and "query 'q2' is empty" in err


def test_index_lexical_refusals(
    stores: dict[str, Path], tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = str(stores["lexical"].parent / "corpus.jsonl")
    base = ["index", "--model", str(tiny_model_dir), "--output", str(tmp_path / "out")]
    # the databases rank with their own full-text search: BM25 settings are the memory backend's
    code, err = _fails(
        [*base, "--corpus", corpus, "--lexical", "--bm25-k1", "1.2", "--backend", "lancedb"], capsys
    )
    assert code == 1 and "--bm25-k1 set up the memory backend's BM25" in err
    code, err = _fails([*base, "--vectors", str(tmp_path), "--lexical"], capsys)
    assert code == 1 and "--lexical needs --corpus: vector shards carry no texts" in err
    code, err = _fails([*base, "--corpus", corpus, "--bm25-k1", "1.2"], capsys)
    assert code == 1 and "--bm25-k1 set up the lexical part: add --lexical" in err
    code, err = _fails([*base, "--corpus", corpus, "--lexical", "--lexical-language", "klingon"], capsys)
    assert code == 1 and "unknown stemmer language 'klingon'; valid: none, " in err
    assert not (tmp_path / "out").exists()


def test_the_flags_choices_are_the_enums() -> None:
    from biencoder.cli.search import FUSIONS, MODES

    assert tuple(m.value for m in SearchMode) == MODES
    assert tuple(f.value for f in Fusion) == FUSIONS


def test_index_lexical_decides_the_fusion_as_the_library_does(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from biencoder import SentenceEncoder
    from biencoder.index.persist import read_fusion_record

    rng = random.Random(1)
    rows = [
        {"_id": f"d{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(9, 14)))}
        for i in range(40)
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["-q", "index", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--device", "cpu"]
    out = tmp_path / "store"
    assert main([*argv, "--output", str(out), "--lexical", "--shard-size", "7", "--fusion-probes", "20"]) == 0
    record = read_fusion_record(out)
    assert record is not None and record.source == "chosen" and record.evidence is not None
    assert record.evidence["probes"] == 20 and record.evidence["docs"] == 40
    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    again = Index.load(out, encoder=encoder).choose_fusion(probes=20)  # the stored vectors, not the shards
    assert (again.alpha, again.adaptive) == (record.alpha, record.adaptive)
    assert again.evidence is not None and again.evidence["mrr"] == record.evidence["mrr"]
    capsys.readouterr()
    search = ["-q", "search", "--index", str(out), "--device", "cpu", "-k", "3", "--explain"]
    assert main([*search, "cat dog"]) == 0
    explained = capsys.readouterr().err
    assert "the label-free decision made at build" in explained and record.evidence["reason"] in explained
    assert main([*search, "--alpha", "0.4", "cat dog"]) == 0
    assert "alpha 0.4" in capsys.readouterr().err
    assert main([*argv, "--output", str(tmp_path / "none"), "--lexical", "--fusion-probes", "0"]) == 0
    assert read_fusion_record(tmp_path / "none") is None
    assert main([*search[:3], str(tmp_path / "none"), *search[4:], "cat dog"]) == 0
    assert "the library default" in capsys.readouterr().err
