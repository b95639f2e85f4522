"""``biencoder mine`` on the tiny model: files in, rows ``biencoder train`` reads, known positives out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biencoder.cli import main
from biencoder.training.mining import MiningConfig, mine_hard_negatives

DOCS = [
    "the cat sat on the mat",
    "a dog runs in the park",
    "fish swim in the river",
    "birds fly over trees",
    "the red car is fast",
    "water is blue and cold",
    "a small house by the river",
    "the tree is green",
]
PAIRS = [
    ("where is the cat", DOCS[0]),
    ("what does the dog do", DOCS[1]),
    ("where do fish swim", DOCS[2]),
    ("what flies over trees", DOCS[3]),
    ("which car is fast", DOCS[4]),
]


def test_known_positives_are_never_negatives(tiny_model_dir: Path) -> None:
    from biencoder.encoder import SentenceEncoder

    enc = SentenceEncoder.load(tiny_model_dir, device="cpu")
    anchors, positives = [a for a, _ in PAIRS], [p for _, p in PAIRS]
    plain = mine_hard_negatives(enc, anchors, positives, DOCS, MiningConfig(num_negatives=2))
    first = {r[2] for r in plain.rows if r[0] == anchors[0]}
    known = {anchors[0]: sorted(first)}  # declare the first query's negatives relevant after all
    again = mine_hard_negatives(enc, anchors, positives, DOCS, MiningConfig(num_negatives=2), known)
    assert not {r[2] for r in again.rows if r[0] == anchors[0]} & first
    assert all(r[2] != r[1] and r[2] != r[0] for r in again.rows)
    with pytest.raises(ValueError, match="cannot mine 5 negatives"):
        MiningConfig(num_negatives=5, range_max=4).window(1)
    with pytest.raises(ValueError, match="sampling_strategy"):
        MiningConfig(sampling_strategy="best")


def test_mine_command_writes_rows_train_reads(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in PAIRS))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(DOCS) + "\n")
    out = tmp_path / "mined.jsonl"
    argv = ["-q", "mine", "--model", str(tiny_model_dir), "--data", str(pairs), "--corpus", str(corpus)]
    assert main([*argv, "--output", str(out), "--num-negatives", "2", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * len(PAIRS) and set(rows[0]) == {"anchor", "positive", "negative"}
    tuples = tmp_path / "mined-n.jsonl"
    argv_n = [*argv, "--output", str(tuples), "--output-format", "n-tuple", "--sampling-strategy", "random"]
    assert main([*argv_n, "--num-negatives", "2", "--device", "cpu"]) == 0
    assert set(json.loads(tuples.read_text().splitlines()[0])) == {
        "anchor",
        "positive",
        "negative_1",
        "negative_2",
    }
    trained = tmp_path / "model"
    train = ["-q", "train", "--base", str(tiny_model_dir), "--data", str(out), "--output", str(trained)]
    assert (
        main([*train, "--batch-size", "4", "--max-steps", "2", "--max-seq-length", "24", "--device", "cpu"])
        == 0
    )
    assert "negative" in (trained / "README.md").read_text()
    assert (
        main(
            [
                "mine",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(pairs),
                "--output",
                str(tmp_path / "x.csv"),
            ]
        )
        == 1
    )


def test_mine_from_a_beir_folder_excludes_every_relevant_document(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(DOCS))
    )
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": a}) + "\n" for i, (a, _) in enumerate(PAIRS))
    )
    # q0 has two relevant documents; d6 only in the qrels with score 0 (not relevant)
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(PAIRS)))
    (beir / "qrels" / "train.tsv").write_text(qrels + "q0\td7\t1\nq1\td6\t0\n")
    out = tmp_path / "mined.jsonl"
    argv = ["-q", "mine", "--model", str(tiny_model_dir), "--data", str(beir), "--output", str(out)]
    assert main([*argv, "--num-negatives", "3", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    q0 = [r for r in rows if r["anchor"] == PAIRS[0][0]]
    assert {r["positive"] for r in q0} == {DOCS[0], DOCS[7]}
    assert not {r["negative"] for r in q0} & {DOCS[0], DOCS[7]}
    assert {r["negative"] for r in rows} <= set(DOCS)


class _Table:
    """A fixed embedding per text (unit vectors), so that the dense ranking is known in advance."""

    similarity_fn_name = "cosine"

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        import numpy as np

        self.vectors = {t: np.asarray(v, np.float32) / np.linalg.norm(v) for t, v in vectors.items()}

    def encode(self, texts: list[str], **_: object) -> object:
        import numpy as np

        return np.stack([self.vectors[t] for t in texts])

    def similarity(self, a: object, b: object) -> object:
        import numpy as np

        return np.asarray(a) @ np.asarray(b).T


def test_bm25_candidates_bring_lexical_neighbours_into_the_window() -> None:
    pytest.importorskip("bm25s")
    query, positive = "zebra stripes pattern", "zebras have black and white stripes"
    lexical = "the zebra stripes pattern in fashion"  # shares the query's words, far in the dense space
    others = [f"unrelated text number {i}" for i in range(6)]
    vectors = {query: [1, 0, 0], positive: [0.9, 0.1, 0], lexical: [0.0, 0.0, 1.0]}
    vectors |= {t: [0.5, 0.5 + 0.01 * i, 0.1] for i, t in enumerate(others)}
    encoder = _Table(vectors)
    corpus = [positive, lexical, *others]
    dense = MiningConfig(num_negatives=1, range_max=3)
    assert mine_hard_negatives(encoder, [query], [positive], corpus, dense).rows[0][2] != lexical
    fused = MiningConfig(num_negatives=1, range_max=3, bm25_candidates=2)
    assert mine_hard_negatives(encoder, [query], [positive], corpus, fused).rows[0][2] == lexical
    with pytest.raises(ValueError, match="bm25_candidates"):
        MiningConfig(bm25_candidates=-1)


def test_hnsw_candidates_equal_exact_ones_on_a_small_corpus(tiny_model_dir: Path) -> None:
    pytest.importorskip("faiss")
    from biencoder.encoder import SentenceEncoder

    enc = SentenceEncoder.load(tiny_model_dir, device="cpu")
    anchors, positives = [a for a, _ in PAIRS], [p for _, p in PAIRS]
    exact = mine_hard_negatives(enc, anchors, positives, DOCS, MiningConfig(num_negatives=2))
    hnsw = mine_hard_negatives(enc, anchors, positives, DOCS, MiningConfig(num_negatives=2, index="hnsw"))
    assert hnsw.rows == exact.rows  # 8 texts: the graph search visits all of them
    with pytest.raises(ValueError, match="index must be exact or hnsw"):
        MiningConfig(index="ivf")
