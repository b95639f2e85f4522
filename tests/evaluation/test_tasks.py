"""Classification, clustering and mining evaluators, and the named tasks on the real data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from biencoder.evaluation.base import Evaluator
from biencoder.evaluation.classification import ClassificationEvaluator, undersample
from biencoder.evaluation.clustering import ClusteringEvaluator
from biencoder.evaluation.mining import ParaphraseMiningEvaluator, read_duplicate_pairs
from biencoder.evaluation.tasks import TASKS, TaskOptions, build_tasks, resolve_task
from tests.evaluation.fakes import TableEncoder, TableSTModel


def blobs(
    seed: int, n_labels: int = 4, per_label: int = 30, noise: float = 0.6
) -> tuple[list[str], list[str], dict]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_labels, 8)) * 2
    texts, labels, table = [], [], {}
    for c in range(n_labels):
        for i in range(per_label):
            text = f"l{c}-{i}"
            texts.append(text)
            labels.append(f"label{c}")
            table[text] = (centres[c] + noise * rng.normal(size=8)).astype(np.float32)
    return texts, labels, table


def test_undersample_keeps_at_most_n_per_label_and_reshuffles() -> None:
    labels = ["a"] * 20 + ["b"] * 3 + ["c"] * 11
    draws = undersample(labels, 8, rounds=3, seed=42)
    for draw in draws:
        counts = Counter(labels[i] for i in draw)
        assert counts == {"a": 8, "b": 3, "c": 8}
    assert draws[0] != draws[1]
    assert undersample(labels, 8, rounds=3, seed=42) == draws  # seeded


def test_classification_matches_sklearn_on_the_drawn_samples() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    from sklearn.metrics import accuracy_score, f1_score

    texts, labels, table = blobs(0)
    train, test = slice(0, None, 2), slice(1, None, 2)
    ev = ClassificationEvaluator(
        name="c",
        train_texts=texts[train],
        train_labels=labels[train],
        test_texts=texts[test],
        test_labels=labels[test],
        n_experiments=3,
    )
    ours = ev(TableEncoder(table))
    acc, f1 = [], []
    x_test = np.stack([table[t] for t in texts[test]])
    for draw in undersample(labels[train], 8, 3, 42):
        clf = sklearn.LogisticRegression(max_iter=100, random_state=42)
        clf.fit(np.stack([table[texts[train][i]] for i in draw]), [labels[train][i] for i in draw])
        pred = clf.predict(x_test)
        acc.append(accuracy_score(labels[test], pred))
        f1.append(f1_score(labels[test], pred, average="macro"))
    assert ours == pytest.approx({"accuracy": np.mean(acc), "f1": np.mean(f1)}, abs=1e-12)
    assert ours["accuracy"] > 0.9  # separable blobs


def test_clustering_v_measure() -> None:
    texts, labels, table = blobs(1, noise=0.2)
    ours = ClusteringEvaluator(name="k", texts=texts, labels=labels)(TableEncoder(table))
    assert ours["v_measure"] > 0.9
    rng = np.random.default_rng(0)
    shuffled = list(rng.permutation(labels))
    assert ClusteringEvaluator(name="k", texts=texts, labels=shuffled)(TableEncoder(table))["v_measure"] < 0.2
    with pytest.raises(ValueError, match="at least 2 labels"):
        ClusteringEvaluator(name="k", texts=["a"], labels=["x"])


def test_read_duplicate_pairs(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text("a ?\tb ?\t1\nc ?\ta ?\t0\nd\te\t1\n")
    texts, dups = read_duplicate_pairs(path)
    assert texts == ["a ?", "b ?", "c ?", "d", "e"] and dups == [(0, 1), (3, 4)]
    path.write_text("a\tb\t1\nbroken line\n")
    with pytest.raises(ValueError, match=r"dev\.tsv:2"):
        read_duplicate_pairs(path)


def test_mining_equals_sentence_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    module = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    pytest.importorskip("biencoder.uses.mining")
    texts, labels, table = blobs(2, n_labels=10, per_label=6, noise=1.5)
    rng = np.random.default_rng(3)
    dups = [
        (int(i), int(j))
        for i, j in rng.integers(0, len(texts), size=(40, 2))
        if i != j and labels[i] == labels[j]
    ]
    ref_ev = module.ParaphraseMiningEvaluator(
        {str(i): t for i, t in enumerate(texts)},
        [(str(i), str(j)) for i, j in dups],
        top_k=5,
        write_csv=False,
    )
    monkeypatch.setattr(ref_ev, "store_metrics_in_model_card_data", lambda *a, **k: None)
    ref = ref_ev(TableSTModel(table))
    ours = ParaphraseMiningEvaluator(name="m", texts=texts, duplicates=dups, top_k=5)(TableEncoder(table))
    for key, value in ours.items():
        assert value == pytest.approx(ref[key], abs=1e-6), key


def test_resolve_task_names_the_known_ones() -> None:
    assert resolve_task("SciFact").name == "scifact"
    with pytest.raises(ValueError, match="known tasks: scifact, trec-dl19"):
        resolve_task("nope")


def test_build_tasks_without_data_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pass its location with --data"):
        build_tasks(["scifact"], tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"scifact \("):
        build_tasks(["scifact"], tmp_path)


def test_every_task_builds_on_the_real_data(data_dir: Path) -> None:
    evaluators = build_tasks(list(TASKS), data_dir, TaskOptions(limit=20))
    for task, ev in zip(TASKS.values(), evaluators, strict=True):
        assert isinstance(ev, Evaluator)
        assert ev.primary_metric == task.shown[0]
    dl19 = evaluators[1]
    assert dl19.relevance_threshold == 2  # type: ignore[attr-defined]
    full = build_tasks(["trec-dl19"], data_dir)[0]
    assert len(full.query_ids) == 43  # type: ignore[attr-defined]  # 7 unjudged queries dropped
