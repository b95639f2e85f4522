"""Pseudo-queries cut out of a corpus, for choosing hybrid fusion without labels.

A probe is one document split in two: a piece of it becomes the query, and the rest of the
document, the piece taken out, becomes the target among the corpus's other documents. Taking the
piece out matters: a query that still stands word for word in its target is found by BM25
whatever the corpus, and would always vote for the lexical side.

- A document of two or more sentences gives one sentence as the query, the others as the target
  (the inverse cloze task, Lee et al., 2019).
- A one-sentence document of at least ``2 * MIN_WORDS`` words gives a contiguous half of its
  words as the query, the words around it as the target.
- Shorter documents give no probe.

Pure Python and numpy, seeded: the same texts and seed always give the same probes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MIN_WORDS = 4  # the fewest words in a probe's query and in its target
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True, kw_only=True, slots=True)
class Probes:
    """``rows[i]``: the document cut; ``queries[i]``: the piece taken out; ``targets[i]``: the rest."""

    rows: NDArray[np.int64]
    queries: list[str]
    targets: list[str]
    kinds: list[str]  # "sentence" or "span"

    def __len__(self) -> int:
        return len(self.rows)


def split_document(text: str, rng: np.random.Generator) -> tuple[str, str, str] | None:
    """(query, target, kind) cut out of one document, or None when it is too short for a probe."""
    sentences = [s for s in SENTENCE_END.split(text.strip()) if s.strip()]
    if len(sentences) >= 2:
        words = [len(s.split()) for s in sentences]
        total = sum(words)
        eligible = [i for i, w in enumerate(words) if w >= MIN_WORDS and total - w >= MIN_WORDS]
        if eligible:
            i = int(eligible[rng.integers(len(eligible))])
            return sentences[i], " ".join(sentences[:i] + sentences[i + 1 :]), "sentence"
    words_list = text.split()
    if len(words_list) < 2 * MIN_WORDS:
        return None
    span = len(words_list) // 2
    start = int(rng.integers(0, len(words_list) - span + 1))
    query = " ".join(words_list[start : start + span])
    target = " ".join(words_list[:start] + words_list[start + span :])
    return query, target, "span"


def make_probes(texts: Sequence[str | None], n: int, seed: int = 0) -> Probes:
    """Up to ``n`` probes from documents drawn at random (``seed``) among ``texts``; None texts
    and documents too short to cut are passed over."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of probes must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    queries: list[str] = []
    targets: list[str] = []
    kinds: list[str] = []
    for row in rng.permutation(len(texts)):
        text = texts[int(row)]
        if text is None:
            continue
        cut = split_document(text, rng)
        if cut is None:
            continue
        rows.append(int(row))
        queries.append(cut[0])
        targets.append(cut[1])
        kinds.append(cut[2])
        if len(rows) == n:
            break
    return Probes(rows=np.asarray(rows, dtype=np.int64), queries=queries, targets=targets, kinds=kinds)


def probe_corpus(count: int, probes: Probes, max_docs: int, seed: int = 0) -> NDArray[np.int64]:
    """Rows of the corpus the probes are searched in: every probe's document and, up to
    ``max_docs`` in all, others drawn at random (all of them when the corpus is no larger), sorted."""
    if max_docs < len(probes):
        raise ValueError(f"max_docs ({max_docs}) is below the number of probes ({len(probes)})")
    if count <= max_docs:
        return np.arange(count, dtype=np.int64)
    others = np.setdiff1d(np.arange(count, dtype=np.int64), probes.rows)
    rng = np.random.default_rng(seed + 1)
    drawn = rng.choice(others, size=max_docs - len(probes), replace=False)
    return np.sort(np.concatenate([probes.rows, drawn]).astype(np.int64))
