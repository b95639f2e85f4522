"""Cross-validating hybrid search's dense weight: the pure CV on hand-made score matrices, and
``biencoder tune-fusion`` end to end on a tiny index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.cli import main as cli_main
from biencoder.evaluation import metrics
from biencoder.evaluation.fusion_cv import (
    best_alpha,
    cross_validate,
    fold_of_queries,
    parse_grid,
)
from biencoder.evaluation.hybrid import Candidates, alpha_scores
from biencoder.index import Index
from biencoder.index.lexical import LexicalConfig
from tests.tiny import WORDS

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

Qrels = dict[str, dict[str, int]]
Setup = tuple[Path, Path, dict[str, Any]]

# --- the pure cross-validation ------------------------------------------------------------------


def test_one_alpha_best_everywhere_is_every_fold_pick() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 0.5, size=(23, 4))
    scores[:, 2] += 0.5  # alpha 0.6 wins on every query
    cv = cross_validate(scores, [0.0, 0.3, 0.6, 1.0], folds=5, seed=1)
    assert [f.alpha for f in cv.folds] == [0.6] * 5 and cv.alpha == 0.6
    assert cv.cv_score == pytest.approx(scores[:, 2].mean())
    assert [f.test_queries for f in cv.folds] == [5, 5, 5, 4, 4]
    assert all(f.train_queries + f.test_queries == 23 for f in cv.folds)
    assert cv.means == pytest.approx(tuple(scores.mean(axis=0)))


def test_held_out_picks_can_disagree_with_the_full_data() -> None:
    # Leave-one-out on four queries: without q0 or q1 the second alpha wins, without q2 or q3 the
    # first, and each held-out query scores 0 with the alpha its fold picked.
    scores = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.9]])
    cv = cross_validate(scores, [0.2, 0.9], folds=4, seed=3)
    assert sorted(f.alpha for f in cv.folds) == [0.2, 0.2, 0.9, 0.9]
    assert [f.test_score for f in cv.folds] == [0.0] * 4 and cv.cv_score == 0.0
    assert cv.alpha == 0.2  # mean 0.5 against 0.475 on all queries
    picks = {f.alpha: f.train_score for f in cv.folds}
    assert picks == pytest.approx({0.2: 2 / 3, 0.9: 1.9 / 3})


def test_matches_a_plain_loop_on_random_scores() -> None:
    rng = np.random.default_rng(7)
    scores = rng.uniform(size=(50, 6))  # no ties
    grid = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    cv = cross_validate(scores, grid, folds=4, seed=11)
    fold = fold_of_queries(50, 4, 11)
    held = np.empty(50)
    for f in range(4):
        pick = int(np.argmax(scores[fold != f].mean(axis=0)))
        held[fold == f] = scores[fold == f, pick]
        assert cv.folds[f].alpha == grid[pick]
        assert cv.folds[f].test_score == pytest.approx(scores[fold == f, pick].mean())
    assert cv.cv_score == pytest.approx(held.mean())
    assert cv.alpha == grid[int(np.argmax(scores.mean(axis=0)))]


def test_ties_go_to_the_alpha_closest_to_half_then_the_smaller() -> None:
    assert best_alpha(np.array([0.7, 0.7, 0.7, 0.1]), [0.0, 0.2, 0.6, 1.0]) == 2  # 0.6 is closest to 0.5
    assert best_alpha(np.array([0.7, 0.7, 0.2]), [0.4, 0.6, 0.5]) == 0  # 0.4 and 0.6 equally close
    assert best_alpha(np.array([0.3, 0.5, 0.5 - 1e-15]), [0.5, 0.0, 1.0]) == 1  # float noise is a tie
    assert best_alpha(np.array([0.1, 0.3]), [0.5, 1.0]) == 1  # no tie: the best
    flat = cross_validate(np.full((10, 3), 0.4), [0.0, 0.5, 1.0], folds=2)
    assert flat.alpha == 0.5 and {f.alpha for f in flat.folds} == {0.5}


def test_folds_are_seeded_and_balanced() -> None:
    a, b = fold_of_queries(17, 5, 42), fold_of_queries(17, 5, 42)
    assert np.array_equal(a, b) and not np.array_equal(a, fold_of_queries(17, 5, 43))
    assert sorted(np.bincount(a).tolist()) == [3, 3, 3, 4, 4]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="folds must be an integer >= 2, got 1"):
        fold_of_queries(10, 1, 0)
    with pytest.raises(ValueError, match="5 folds need at least 5 queries, got 3"):
        cross_validate(np.zeros((3, 2)), [0.0, 1.0], folds=5)
    with pytest.raises(ValueError, match=r"scores must be \[queries, 3 alphas\], got shape \(4, 2\)"):
        cross_validate(np.zeros((4, 2)), [0.0, 0.5, 1.0], folds=2)
    with pytest.raises(ValueError, match="NaN"):
        cross_validate(np.full((4, 2), np.nan), [0.0, 1.0], folds=2)
    with pytest.raises(ValueError, match="repeats"):
        cross_validate(np.zeros((4, 2)), [0.5, 0.5], folds=2)
    assert parse_grid("0,0.1,...,1") == tuple(round(0.1 * i, 10) for i in range(11))
    assert parse_grid("0.25, 0.75") == (0.25, 0.75)
    for bad, message in [("0,0.3,...,1", "not on the run"), ("0,1.5", r"in \[0, 1\]"), ("", "empty")]:
        with pytest.raises(ValueError, match=message):
            parse_grid(bad)


# --- tune-fusion end to end ---------------------------------------------------------------------


def tiny_collection(
    seed: int = 0,
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, dict[str, int]]]]:
    """60 documents of random words; 24 queries, each a few words of its one relevant document
    and some noise; queries 0-17 in the train split, the rest in test."""
    rng = np.random.default_rng(seed)
    words = WORDS[26:]  # the content words of the tiny vocabulary (no stop words)
    corpus = {f"d{i}": " ".join(rng.choice(words, 8)) for i in range(60)}
    queries: dict[str, str] = {}
    splits: dict[str, Qrels] = {"train": {}, "test": {}}
    for n in range(24):
        doc = f"d{rng.integers(60)}"
        queries[f"q{n}"] = " ".join([*rng.choice(corpus[doc].split(), 3), *rng.choice(words, 2)])
        splits["train" if n < 18 else "test"][f"q{n}"] = {doc: 1}
    return corpus, queries, splits


def write_beir(
    folder: Path, corpus: dict[str, str], queries: dict[str, str], splits: dict[str, Qrels]
) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        f.writelines(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in corpus.items())
    with (folder / "queries.jsonl").open("w") as f:
        f.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    for split, qrels in splits.items():
        lines = [f"{q}\t{d}\t{g}" for q, r in qrels.items() for d, g in r.items()]
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n"
        )
    return folder


@pytest.fixture(scope="module")
def tiny_setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    from biencoder import SentenceEncoder

    root = tmp_path_factory.mktemp("tune")
    corpus, queries, splits = tiny_collection()
    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    index = Index(encoder=encoder, lexical=LexicalConfig(), model_name=str(tiny_model_dir))
    index.add(list(corpus), list(corpus.values()))
    index.save(root / "index")
    plain = Index(encoder=encoder, model_name=str(tiny_model_dir))
    plain.add(list(corpus), list(corpus.values()))
    plain.save(root / "plain")
    return root, write_beir(root / "beir", corpus, queries, splits), {"queries": queries, "splits": splits}


def test_tune_fusion_records_the_cross_validated_pick(
    tiny_setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root, beir, data = tiny_setup
    folder = tmp_path / "index"
    shutil.copytree(root / "index", folder)
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    argv = [
        "tune-fusion",
        "--index",
        str(folder),
        "--data",
        str(beir),
        "--folds",
        "3",
        "--grid",
        "0,0.25,...,1",
    ]
    assert cli_main([*argv, "--candidates", "20", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    loaded = Index.load(folder)
    record = loaded.fusion_record
    assert record is not None and loaded.fusion_alpha == record.alpha
    assert record.grid == tuple(grid) and record.split == "train" and record.folds == 3
    assert record.data == str(beir) and record.fusion == "convex" and record.normalization == "minmax"
    assert f"final alpha (best on all 18 queries): {record.alpha:g}" in out and "fold 3:" in out

    # The same pick from hybrid searches run one alpha at a time through Index.search.
    from biencoder import SentenceEncoder

    index = Index.load(folder, encoder=SentenceEncoder.load(loaded.model_name or "", device="cpu"))
    qrels = data["splits"]["train"]
    texts = [data["queries"][q] for q in qrels]
    scores = np.zeros((len(qrels), len(grid)))
    for a, alpha in enumerate(grid):
        hybrid = index.search(texts, 100, mode="hybrid", alpha=alpha, candidates=20)
        for n, q in enumerate(qrels):
            scores[n, a] = metrics.query_metrics(hybrid.ids[n], qrels[q])["ndcg@10"]
    cv = cross_validate(scores, grid, folds=3, seed=5)
    assert record.alpha == cv.alpha and record.cv_score == pytest.approx(cv.cv_score, abs=1e-12)
    dense, lexical = index.search(texts, 100, mode="dense"), index.search(texts, 100, mode="lexical")
    matrix = alpha_scores(Candidates.from_results(dense, lexical, index.ids), list(qrels.values()), grid)
    np.testing.assert_allclose(matrix, scores, atol=1e-12)


def test_tune_fusion_refusals(tiny_setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    root, beir, _ = tiny_setup
    base = ["tune-fusion", "--index", str(root / "index"), "--data", str(beir), "--folds", "2"]
    assert cli_main([*base, "--split", "test"]) == 1
    err = capsys.readouterr().err
    assert "the test split is never read to choose anything" in err and "--allow-test" in err
    assert not (root / "index" / "fusion.json").exists()
    assert cli_main(["tune-fusion", "--index", str(root / "plain"), "--data", str(beir)]) == 1
    assert "has no lexical part" in capsys.readouterr().err
    assert cli_main([*base, "--fusion", "rrf"]) == 1
    assert "rrf fusion has no weight to tune" in capsys.readouterr().err
    assert cli_main([*base, "--metric", "ndcg@7"]) == 1
    assert "unknown metric 'ndcg@7'; valid: accuracy@1" in capsys.readouterr().err
    assert cli_main([*base, "--folds", "30"]) == 1
    assert "30 folds need at least 30 queries, got 18" in capsys.readouterr().err
    assert cli_main(["tune-fusion", "--index", str(root / "index"), "--task", "wikiqa"]) == 1
    assert "task wikiqa reads a test split" in capsys.readouterr().err
    assert not (root / "index" / "fusion.json").exists()
