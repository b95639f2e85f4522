"""Semantic textual similarity: Pearson and Spearman of cosine similarity against gold scores."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biencoder import similarity as sim
from biencoder.data import DataFormatError
from biencoder.evaluation import metrics
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StsPairs:
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


def load_sts(path: str | Path) -> StsPairs:
    """STS Benchmark's original release: tab-separated, score in column 5, sentences in 6 and 7.

    Some rows carry extra columns (sources) after the sentences; quotes are literal text.
    A 3-column file (sentence1, sentence2, score) is read too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STS file not found: {path}")
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            row = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            if len(row) >= 7:
                score, a, b = row[4], row[5], row[6]
            elif len(row) == 3:
                a, b, score = row
            else:
                raise DataFormatError(
                    f"{path}:{number}: expected 7+ tab-separated columns (STSb) or 3, got {len(row)}"
                )
            try:
                value = float(score)
            except ValueError:
                if number == 1:  # a header row
                    continue
                raise DataFormatError(f"{path}:{number}: score {score!r} is not a number") from None
            s1.append(a)
            s2.append(b)
            scores.append(value)
    if len(scores) < 2:
        raise DataFormatError(f"{path}: needs at least 2 scored pairs, found {len(scores)}")
    return StsPairs(s1, s2, scores)


@dataclass(frozen=True, kw_only=True)
class StsEvaluator:
    """``pearson`` and ``spearman`` of the cosine similarity of each pair against its gold score."""

    name: str
    sentences1: Sequence[str]
    sentences2: Sequence[str]
    scores: Sequence[float]
    batch_size: int = 32
    show_progress: bool | None = None
    primary_metric: str = "spearman"

    def __post_init__(self) -> None:
        if not len(self.sentences1) == len(self.sentences2) == len(self.scores):
            raise ValueError(
                f"{self.name}: {len(self.sentences1)} first sentences, {len(self.sentences2)} second "
                f"sentences and {len(self.scores)} scores; they must be equal"
            )
        if len(self.scores) < 2:
            raise ValueError(f"{self.name}: needs at least 2 pairs")
        if self.batch_size <= 0:
            raise ValueError(f"{self.name}: batch_size must be positive, got {self.batch_size}")

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        name: str | None = None,
        max_pairs: int | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> StsEvaluator:
        pairs = load_sts(path)
        n = max_pairs or len(pairs.scores)
        return cls(
            name=name or Path(path).stem,
            sentences1=pairs.sentences1[:n],
            sentences2=pairs.sentences2[:n],
            scores=pairs.scores[:n],
            batch_size=batch_size,
            show_progress=show_progress,
        )

    def similarities(self, encoder: Encoder) -> np.ndarray:
        """Cosine similarity of each pair; each distinct sentence is encoded once."""
        unique = list(dict.fromkeys([*self.sentences1, *self.sentences2]))
        position = {s: i for i, s in enumerate(unique)}
        emb = encoder.encode(unique, batch_size=self.batch_size, show_progress=self.show_progress)
        a = emb[[position[s] for s in self.sentences1]]
        b = emb[[position[s] for s in self.sentences2]]
        return sim.pairwise_cosine(a, b)

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        predicted = self.similarities(encoder)
        result = {
            "pearson": metrics.pearson(self.scores, predicted),
            "spearman": metrics.spearman(self.scores, predicted),
        }
        logger.info(
            "%s: pearson %.4f, spearman %.4f over %d pairs",
            self.name,
            result["pearson"],
            result["spearman"],
            len(self.scores),
        )
        return result
