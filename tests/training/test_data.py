"""Training-data readers: every format and column layout, MS MARCO and BEIR joins, saved datasets, errors."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from biencoder.data import DataFormatError
from biencoder.data.beir import load_beir
from biencoder.data.pairs import read_pairs
from biencoder.data.sources import load_all, load_training_data

ROWS = [
    {"anchor": "what is a cat", "positive": "a small animal, with fur", "negative": 'say "hello"'},
    {"anchor": "how big\tis it", "positive": "quite big", "negative": "the sea is blue"},
    {"anchor": "who wrote it", "positive": "an author wrote it", "negative": "nobody"},
]
LAYOUTS = [
    (("anchor", "positive", "negative"), 3),
    (("anchor", "positive"), 2),
    (("sentence_0", "sentence_1", "sentence_2"), 3),
    (("query", "passage"), 2),
    (("query", "positive", "negative"), 3),
    (("question", "answer"), 2),
]


def _rows(names: tuple[str, ...]) -> list[dict[str, str]]:
    keys = ("anchor", "positive", "negative")
    return [{name: row[k] for name, k in zip(names, keys, strict=False)} for row in ROWS]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    names = list(rows[0])
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({n: [r[n] for r in rows] for n in names}), path)
    else:
        with path.open("w", encoding="utf-8", newline="") as f:
            if path.suffix == ".tsv":
                lines = [names] + [[str(r[n]) for n in names] for r in rows]
                f.write("".join("\t".join(v.replace("\t", " ") for v in line) + "\n" for line in lines))
            else:
                writer = csv.DictWriter(f, fieldnames=names)
                writer.writeheader()
                writer.writerows(rows)
    return path


def _expected(path: Path, names: list[str]) -> list[tuple[str, ...]]:
    """The rows as an independent reader (pandas) sees them."""
    import pandas as pd

    if path.suffix == ".jsonl":
        frame = pd.read_json(path, lines=True)
    elif path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".tsv":
        frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)
    else:
        frame = pd.read_csv(path)
    return [tuple(str(v) for v in row) for row in frame[names].itertuples(index=False)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
@pytest.mark.parametrize(("names", "width"), LAYOUTS)
def test_formats_and_named_columns(tmp_path: Path, suffix: str, names: tuple[str, ...], width: int) -> None:
    path = _write(tmp_path / f"pairs{suffix}", [{**r, "label": "x"} for r in _rows(names)])  # type: ignore[dict-item]
    data = read_pairs(path)
    assert data.columns == names[:width] and data.num_columns == width
    assert [data.row(i) for i in range(len(data))] == _expected(path, list(names[:width]))
    assert data.skipped == 0


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_unnamed_columns_take_the_first_two_or_three(tmp_path: Path, suffix: str) -> None:
    rows = [{"q": r["anchor"], "d": r["positive"], "n": r["negative"], "z": "more"} for r in ROWS]
    data = read_pairs(_write(tmp_path / f"x{suffix}", rows))  # type: ignore[arg-type]
    assert data.columns == ("q", "d", "n")
    assert [data.row(i) for i in range(3)] == [(r["q"], r["d"], r["n"]) for r in rows]
    two = read_pairs(_write(tmp_path / f"y{suffix}", [{"q": r["q"], "d": r["d"]} for r in rows]))
    assert two.columns == ("q", "d") and two.negatives is None


def test_parquet_skips_non_text_columns(tmp_path: Path) -> None:
    rows = [{"id": i, "q": r["anchor"], "score": 1.5, "d": r["positive"]} for i, r in enumerate(ROWS)]
    data = read_pairs(_write(tmp_path / "x.parquet", rows))  # type: ignore[arg-type]
    assert data.columns == ("q", "d")


def test_headerless_tsv_is_msmarco_triples(data_dir: Path) -> None:
    path = data_dir / "msmarco-triples-sample" / "triplets_raw.tsv"
    data = load_training_data(path)
    with path.open(encoding="utf-8", newline="") as f:
        expected = [tuple(row) for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert len(expected) == 100 and data.num_columns == 3
    assert [data.row(i) for i in range(len(data))] == expected


def _id_texts(path: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, text = line.split("\t", 1)
        texts.setdefault(key, text)
    return texts


def test_msmarco_folder_joins_one_pair_per_qrel(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = data_dir / "msmarco-triples-sample"
    collection = _id_texts(folder / "full_collection_raw.tsv")
    queries = _id_texts(folder / "dev_queries_raw.tsv")
    qrels = json.loads((folder / "qrel_qrel.json").read_text())
    expected = [
        (queries[q], collection[p]) for q, docs in qrels.items() for p, score in docs.items() if score > 0
    ]
    with caplog.at_level(logging.WARNING):
        data = load_training_data(folder)
    assert data.columns == ("query", "passage")
    assert [data.row(i) for i in range(len(data))] == expected and len(expected) == 11
    assert "repeated ids" in caplog.text  # the sample's queries file repeats ids: the first text is kept


def test_msmarco_tsv_qrels_and_unknown_ids(tmp_path: Path) -> None:
    (tmp_path / "collection.tsv").write_text("p1\tfirst passage\np2\tsecond passage\n")
    (tmp_path / "queries.train.tsv").write_text("q1\tfirst query\nq2\tsecond query\n")
    (tmp_path / "qrels.train.tsv").write_text("q1\t0\tp2\t1\nq2\t0\tp1\t0\nq2\t0\tp9\t1\nq2\t0\tp1\t1\n")
    with pytest.raises(DataFormatError, match=r"qrels\.train\.tsv:3: passage 'p9'"):
        load_training_data(tmp_path)
    data = load_training_data(tmp_path, skip_invalid=True)
    assert [data.row(i) for i in range(len(data))] == [
        ("first query", "second passage"),
        ("second query", "first passage"),
    ]
    assert data.skipped == 1


def test_beir_train_pairs_equal_the_beir_loader(data_dir: Path) -> None:
    folder = data_dir / "scifact"
    beir = load_beir(folder, "train")
    data = load_training_data(folder)
    rows = (folder / "qrels" / "train.tsv").read_text().splitlines()[1:]
    order = [(q, d) for q, d, s in (r.split("\t") for r in rows) if int(s) > 0]
    assert len(data) == len(order) == 919
    assert [data.row(i) for i in range(len(data))] == [(beir.queries[q], beir.corpus[d]) for q, d in order]


def test_saved_hf_dataset_and_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    columns = {k: [r[k] for r in ROWS] for k in ("anchor", "positive")}
    plain = datasets.Dataset.from_dict({"id": [1, 2, 3], **columns})
    plain.save_to_disk(str(tmp_path / "plain"))
    data = load_training_data(tmp_path / "plain")
    assert [data.row(i) for i in range(3)] == list(zip(columns["anchor"], columns["positive"], strict=True))
    split = datasets.DatasetDict({"train": plain, "dev": plain.select([0])})
    split.save_to_disk(str(tmp_path / "dict"))
    assert len(load_training_data(tmp_path / "dict")) == 3
    assert len(load_training_data(tmp_path / "dict", split="dev")) == 1
    with pytest.raises(DataFormatError, match="no 'test' split"):
        load_training_data(tmp_path / "dict", split="test")


BAD = [
    (
        ".jsonl",
        '{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive": "d"}\n{"anchor": "e"\n',
        3,
        "JSON",
    ),
    (
        ".jsonl",
        '{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n{"anchor": "e", "positive": "f"}\n',
        2,
        "missing",
    ),
    (".jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": " ", "positive": "d"}\n', 2, "empty"),
    (".jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": 3, "positive": "d"}\n', 2, "int"),
    (".csv", "anchor,positive\na,b\nc\ne,f\n", 3, "expected 2 fields"),
    (".csv", 'anchor,positive\na,b\n"multi\nline",x\ne,\n', 5, "empty"),
    (".tsv", "a\tb\nc\td\ne\n", 3, "expected 2 fields"),
    (".tsv", "anchor\tpositive\na\tb\n\t\n", 3, "empty"),
]


@pytest.mark.parametrize(("suffix", "text", "line", "what"), BAD)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, suffix: str, text: str, line: int, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"{path.name}:{line}: .*{what}"):
        read_pairs(path)
    with caplog.at_level(logging.WARNING):
        data = read_pairs(path, skip_invalid=True)
    assert data.skipped == 1 and len(data) >= 1
    assert "skipped 1 malformed rows" in caplog.text and str(path) in caplog.text


def test_parquet_bad_row_and_skip_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        {"anchor": "a", "positive": "b"},
        {"anchor": None, "positive": "d"},
        {"anchor": "e", "positive": ""},
    ]
    path = _write(tmp_path / "bad.parquet", rows)  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match=r"bad\.parquet:row 2: column 'anchor' is missing"):
        read_pairs(path)
    with caplog.at_level(logging.WARNING):
        data = read_pairs(path, skip_invalid=True)
    assert data.skipped == 2 and data.row(0) == ("a", "b") and len(data) == 1
    assert "skipped 2 malformed rows" in caplog.text


def test_unknown_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_training_data(tmp_path / "nowhere.jsonl")
    (tmp_path / "x.txt").write_text("a\tb\n")
    with pytest.raises(DataFormatError, match=r"unsupported .*'\.txt'"):
        load_training_data(tmp_path / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="not a recognised training folder"):
        load_training_data(tmp_path / "empty")
    (tmp_path / "one.jsonl").write_text('{"anchor": "a"}\n')
    with pytest.raises(DataFormatError, match="two text columns"):
        load_training_data(tmp_path / "one.jsonl")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataFormatError, match="empty"):
        load_training_data(tmp_path / "empty.csv")


def test_load_all_keeps_order_and_widths(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", _rows(("anchor", "positive", "negative")))  # type: ignore[arg-type]
    b = _write(tmp_path / "b.csv", _rows(("query", "passage")))  # type: ignore[arg-type]
    found = load_all([a, b])
    assert [d.name for d in found] == ["a", "b"] and [d.num_columns for d in found] == [3, 2]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_a_numeric_score_column_is_each_rows_score(tmp_path: Path, suffix: str) -> None:
    rows = [
        {"sentence1": r["anchor"], "sentence2": r["positive"], "score": i * 1.5} for i, r in enumerate(ROWS)
    ]
    data = read_pairs(_write(tmp_path / f"scored{suffix}", rows))  # type: ignore[arg-type]
    assert data.columns == ("sentence1", "sentence2") and data.scores == [0.0, 1.5, 3.0]
    labels = [{"anchor": r["anchor"], "positive": r["positive"], "label": "entailment"} for r in ROWS]
    assert read_pairs(_write(tmp_path / f"nli{suffix}", labels)).scores is None  # type: ignore[arg-type]


def test_a_score_that_is_no_number_is_named(tmp_path: Path) -> None:
    path = tmp_path / "scored.jsonl"
    path.write_text(
        json.dumps({"anchor": "a b", "positive": "c d", "score": 1})
        + "\n"
        + json.dumps({"anchor": "e f", "positive": "g h", "score": "high"})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(DataFormatError, match=r"scored.jsonl:2: score 'high' is not a number"):
        read_pairs(path)
    assert read_pairs(path, skip_invalid=True).scores == [1.0]


def test_stsb_release_is_read_with_its_gold_scores(data_dir: Path) -> None:
    path = data_dir / "stsb" / "sts-train.csv"
    if not path.is_file():
        pytest.skip(f"real data not found at {path}")
    from biencoder.evaluation.sts import load_sts

    data = load_training_data(path)
    reference = load_sts(path)
    assert data.columns == ("sentence1", "sentence2") and len(data) == len(reference.scores) == 5749
    assert data.anchors == list(reference.sentences1) and data.positives == list(reference.sentences2)
    assert data.scores == list(reference.scores)


def test_a_beir_corpus_reads_as_title_text_pairs(tmp_path: Path) -> None:
    """The corpus's own unlabelled pairs: each document's title against its body (no query read)."""
    path = tmp_path / "corpus.jsonl"
    docs = [
        {"_id": "d1", "title": "Cats", "text": "Cats are small."},
        {"_id": "d2", "title": "", "text": "x y"},
    ]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: column 'title' is empty"):
        load_training_data(path)
    data = load_training_data(path, skip_invalid=True)  # untitled documents make no pair
    assert (
        data.columns == ("title", "text") and data.row(0) == ("Cats", "Cats are small.") and data.skipped == 1
    )
