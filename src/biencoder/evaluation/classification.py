"""Classification as MTEB defines it: logistic regression on embeddings, accuracy and macro-F1.

MTEB's settings: ``n_experiments`` (10) rounds, each training on at most ``samples_per_label``
(8) examples of every label drawn from the train split (the index order reshuffled each round
by one seeded generator), ``LogisticRegression(max_iter=100)`` seeded with ``seed`` (42),
scored on the whole test split; the scores are the mean over the rounds.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biencoder.data import DataFormatError
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)


def read_labelled_csv(
    path: str | Path, text_column: str = "text", label_column: str = "category"
) -> tuple[list[str], list[str]]:
    """Texts and labels from a CSV with a header (Banking77: ``text,category``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled CSV not found: {path}")
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if (
            not reader.fieldnames
            or text_column not in reader.fieldnames
            or label_column not in reader.fieldnames
        ):
            raise DataFormatError(
                f"{path}:1: expected columns {text_column!r} and {label_column!r}, got {reader.fieldnames}"
            )
        for row in reader:
            text, label = row.get(text_column), row.get(label_column)
            if text is None or label is None:
                raise DataFormatError(
                    f"{path}:{reader.line_num}: missing {text_column!r} or {label_column!r}"
                )
            texts.append(text)
            labels.append(label)
    return texts, labels


def undersample(labels: Sequence[str], samples_per_label: int, rounds: int, seed: int) -> list[list[int]]:
    """MTEB's draw: each round reshuffles the same index order and keeps the first n of each label."""
    rng = np.random.RandomState(seed)
    idxs = np.arange(len(labels))
    draws = []
    for _ in range(rounds):
        rng.shuffle(idxs)
        count: dict[str, int] = defaultdict(int)
        picked = []
        for i in idxs.tolist():
            if count[labels[i]] < samples_per_label:
                picked.append(i)
                count[labels[i]] += 1
        draws.append(picked)
    return draws


@dataclass(frozen=True, kw_only=True)
class ClassificationEvaluator:
    """``accuracy`` and ``f1`` (macro) of logistic regression on embeddings, MTEB-style."""

    name: str
    train_texts: Sequence[str]
    train_labels: Sequence[str]
    test_texts: Sequence[str]
    test_labels: Sequence[str]
    n_experiments: int = 10
    samples_per_label: int = 8
    max_iter: int = 100
    seed: int = 42
    batch_size: int = 32
    show_progress: bool | None = None
    primary_metric: str = "accuracy"

    def __post_init__(self) -> None:
        if len(self.train_texts) != len(self.train_labels) or len(self.test_texts) != len(self.test_labels):
            raise ValueError(f"{self.name}: texts and labels differ in length")
        if not self.test_texts or len(set(self.train_labels)) < 2:
            raise ValueError(f"{self.name}: needs test texts and at least 2 training labels")
        if min(self.n_experiments, self.samples_per_label, self.max_iter, self.batch_size) <= 0:
            raise ValueError(
                f"{self.name}: n_experiments, samples_per_label, max_iter and batch_size must be positive"
            )

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        try:
            from sklearn.linear_model import LogisticRegression
            from sklearn.metrics import accuracy_score, f1_score
        except ImportError:
            raise ImportError("classification needs scikit-learn: pip install 'biencoder[eval]'") from None
        draws = undersample(self.train_labels, self.samples_per_label, self.n_experiments, self.seed)
        needed = sorted({i for draw in draws for i in draw})  # encode only the drawn training texts
        row = {i: r for r, i in enumerate(needed)}
        train_emb = encoder.encode(
            [self.train_texts[i] for i in needed],
            batch_size=self.batch_size,
            show_progress=self.show_progress,
        )
        test_emb = encoder.encode(
            list(self.test_texts), batch_size=self.batch_size, show_progress=self.show_progress
        )
        accuracy, f1 = [], []
        for draw in draws:
            clf = LogisticRegression(max_iter=self.max_iter, random_state=self.seed)
            clf.fit(train_emb[[row[i] for i in draw]], [self.train_labels[i] for i in draw])
            predicted = clf.predict(test_emb)
            accuracy.append(accuracy_score(self.test_labels, predicted))
            f1.append(f1_score(self.test_labels, predicted, average="macro"))
        result = {"accuracy": float(np.mean(accuracy)), "f1": float(np.mean(f1))}
        logger.info("%s: accuracy %.4f, macro-F1 %.4f", self.name, result["accuracy"], result["f1"])
        return result
