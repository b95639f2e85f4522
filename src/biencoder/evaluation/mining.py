"""Paraphrase mining: average precision of the mined pairs against known duplicates (Quora).

The pairs come from :func:`biencoder.uses.mining.paraphrase_mining`; the scoring is
sentence-transformers' ParaphraseMiningEvaluator's (see :func:`metrics.mined_pairs_scores`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biencoder.data import DataFormatError
from biencoder.evaluation import metrics
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)


def read_duplicate_pairs(
    path: str | Path, max_pairs: int | None = None
) -> tuple[list[str], list[tuple[int, int]]]:
    """Quora's ``q1 \\t q2 \\t label`` rows: the distinct questions, and the index pairs labelled 1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"duplicate-pairs file not found: {path}")
    position: dict[str, int] = {}
    duplicates: list[tuple[int, int]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if max_pairs is not None and number > max_pairs:
                break
            row = line.rstrip("\r\n").split("\t")
            if len(row) < 3 or row[2].strip() not in ("0", "1"):
                raise DataFormatError(f"{path}:{number}: expected 'question1 \\t question2 \\t 0|1'")
            a, b = (position.setdefault(text, len(position)) for text in row[:2])
            if row[2].strip() == "1" and a != b:
                duplicates.append((a, b))
    return list(position), duplicates


@dataclass(frozen=True, kw_only=True)
class ParaphraseMiningEvaluator:
    """``average_precision`` (and the best-F1 point) of mined pairs against ``duplicates`` (index pairs)."""

    name: str
    texts: Sequence[str]
    duplicates: Sequence[tuple[int, int]]
    top_k: int = 100
    max_pairs: int = 500_000
    batch_size: int = 32
    show_progress: bool | None = None
    primary_metric: str = "average_precision"
    _gold: frozenset[tuple[int, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.texts)
        bad = [p for p in self.duplicates if not (0 <= p[0] < n and 0 <= p[1] < n)]
        if bad:
            raise ValueError(f"{self.name}: duplicate pair {bad[0]} is out of range for {n} texts")
        if self.top_k <= 0 or self.max_pairs <= 0:
            raise ValueError(f"{self.name}: top_k and max_pairs must be positive")
        gold = frozenset((min(a, b), max(a, b)) for a, b in self.duplicates if a != b)
        object.__setattr__(self, "_gold", gold)

    @classmethod
    def from_file(
        cls, path: str | Path, *, name: str | None = None, max_pairs: int | None = None, **kwargs: object
    ) -> ParaphraseMiningEvaluator:
        texts, duplicates = read_duplicate_pairs(path, max_pairs)
        return cls(name=name or Path(path).parent.name, texts=texts, duplicates=duplicates, **kwargs)  # type: ignore[arg-type]

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        from biencoder.uses.mining import paraphrase_mining

        pairs = paraphrase_mining(
            encoder,
            list(self.texts),
            batch_size=self.batch_size,
            top_k=self.top_k,
            max_pairs=self.max_pairs,
            show_progress=self.show_progress,
        )
        correct = [(min(i, j), max(i, j)) in self._gold for _, i, j in pairs]
        result = metrics.mined_pairs_scores([s for s, _, _ in pairs], correct, len(self._gold))
        logger.info(
            "%s: average precision %.4f over %d mined pairs",
            self.name,
            result["average_precision"],
            len(pairs),
        )
        return result
