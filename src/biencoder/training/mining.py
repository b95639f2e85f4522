"""Hard-negative mining: for (anchor, positive) pairs, the corpus texts the model ranks close to
the anchor that are not known positives.

The options mean what they mean in sentence-transformers' ``util.mine_hard_negatives`` (and the
default path gives the same negatives, tested): queries are the distinct anchors, the corpus is
the given corpus plus the positives (distinct texts), both embedded normalised; candidates are
the ``range_max + max_positives + 1`` nearest by the model's similarity (searched with
``biencoder.Index``); the anchor itself and every known positive of that anchor are excluded,
``known_positives`` adding relevant texts beyond the rows' own (all qrels of a BEIR query);
margins are measured against the anchor's lowest positive score; then ranks ``range_min`` to
``range_max`` are kept and ``num_negatives`` taken from the top or at random.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from biencoder.index import Index, IndexConfig
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)

STRATEGIES = ("top", "random")
FORMATS = ("triplet", "n-tuple")


@dataclass(frozen=True, kw_only=True)
class MiningConfig:
    num_negatives: int = 3
    range_min: int = 0
    range_max: int | None = None  # default: range_min + num_negatives (x10 with margins) + max positives
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    sampling_strategy: str = "top"
    output_format: str = "triplet"
    seed: int = 42  # random sampling
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {self.num_negatives}")
        if self.range_min < 0:
            raise ValueError(f"range_min must be non-negative, got {self.range_min}")
        if self.sampling_strategy not in STRATEGIES:
            raise ValueError(f"sampling_strategy must be one of {STRATEGIES}, got {self.sampling_strategy!r}")
        if self.output_format not in FORMATS:
            raise ValueError(f"output_format must be one of {FORMATS}, got {self.output_format!r}")

    def window(self, max_positives: int) -> int:
        """range_max, given or derived as sentence-transformers derives it."""
        if self.range_max is not None:
            range_max = self.range_max
        else:
            widen = any(v is not None for v in (self.absolute_margin, self.relative_margin, self.max_score))
            range_max = self.range_min + self.num_negatives * (10 if widen else 1) + max_positives
        if self.range_min >= range_max:
            raise ValueError(f"range_min {self.range_min} must be below range_max {range_max}")
        if self.num_negatives > range_max - self.range_min:
            raise ValueError(
                f"cannot mine {self.num_negatives} negatives from ranks {self.range_min}..{range_max}"
            )
        return range_max


@dataclass(frozen=True)
class Mined:
    columns: tuple[str, ...]  # anchor, positive, negative | negative_1..n
    rows: list[tuple[str, ...]]


def mine_hard_negatives(
    encoder: Encoder,
    anchors: Sequence[str],
    positives: Sequence[str],
    corpus: Sequence[str] | None = None,
    config: MiningConfig | None = None,
    known_positives: Mapping[str, Sequence[str]] | None = None,
) -> Mined:
    """(anchor, positive, negative...) rows for the pairs; see the module docstring."""
    config = config or MiningConfig()
    if len(anchors) != len(positives) or not anchors:
        raise ValueError(
            f"need as many anchors as positives (at least one), got {len(anchors)}, {len(positives)}"
        )
    queries = list(dict.fromkeys(anchors))
    texts = list(dict.fromkeys([*(corpus if corpus is not None else positives), *positives]))
    where = {t: i for i, t in enumerate(texts)}
    query_row = {q: i for i, q in enumerate(queries)}
    own: list[list[int]] = [[] for _ in queries]  # each query's positives, in row order, distinct
    for a, p in zip(anchors, positives, strict=True):
        if where[p] not in own[query_row[a]]:
            own[query_row[a]].append(where[p])
    excluded = [set(rows) for rows in own]
    for q, extra in (known_positives or {}).items():
        if q in query_row:
            excluded[query_row[q]].update(where[t] for t in extra if t in where)
    max_positives = max(len(r) for r in own)
    range_max = config.window(max_positives)

    corpus_emb = encoder.encode(texts, batch_size=config.batch_size, normalize=True)
    query_emb = encoder.encode(queries, batch_size=config.batch_size, normalize=True)
    scores, cand = _candidates(encoder, corpus_emb, query_emb, range_max + max_positives + 1)
    for qi, q in enumerate(queries):
        drop = excluded[qi] | ({where[q]} if q in where else set())
        scores[qi, np.isin(cand[qi], list(drop))] = -np.inf
    positive_scores = [
        np.asarray(encoder.similarity(query_emb[qi : qi + 1], corpus_emb[own[qi]]))[0]
        for qi in range(len(queries))
    ]
    _apply_filters(scores, positive_scores, config)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :range_max]  # best first
    cand = np.take_along_axis(cand, order, axis=1)[:, config.range_min :]
    scores = np.take_along_axis(scores, order, axis=1)[:, config.range_min :]
    chosen = _sample(scores, config)
    return _rows(queries, own, texts, cand, scores, chosen, config)


def _candidates(
    encoder: Encoder, corpus_emb: NDArray[np.float32], query_emb: NDArray[np.float32], count: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """[q, count] scores (-inf padded) and corpus rows (-1 padded) of the nearest texts, exact search."""
    index = Index(corpus_emb.shape[1], config=IndexConfig(metric=encoder.similarity_fn_name))
    index.add([str(i) for i in range(len(corpus_emb))], corpus_emb)
    found = index.search(query_emb, min(count, len(corpus_emb)))
    scores = np.full((len(query_emb), count), -np.inf)
    cand = np.full((len(query_emb), count), -1, dtype=np.int64)
    for qi, (ids, vals) in enumerate(zip(found.ids, found.scores, strict=True)):
        cand[qi, : len(ids)] = [int(i) for i in ids]
        scores[qi, : len(vals)] = vals
    return scores, cand


def _apply_filters(
    scores: NDArray[np.float64], positive_scores: list[NDArray[np.float32]], c: MiningConfig
) -> None:
    lowest = np.array([float(p.min()) for p in positive_scores])[:, None]  # [q, 1]
    if c.absolute_margin is not None:
        scores[scores + c.absolute_margin > lowest] = -np.inf
    if c.relative_margin is not None:
        scores[scores > lowest - np.abs(lowest) * c.relative_margin] = -np.inf
    if c.max_score is not None:
        scores[scores > c.max_score] = -np.inf
    if c.min_score is not None:
        scores[(scores < c.min_score) & np.isfinite(scores)] = -np.inf


def _sample(scores: NDArray[np.float64], c: MiningConfig) -> NDArray[np.int64]:
    """Per query, the positions (into the ranked window) of the negatives taken, best first."""
    if c.sampling_strategy == "top":
        return np.tile(np.arange(c.num_negatives), (len(scores), 1))
    rng = random.Random(c.seed)
    out = []
    for row in scores:
        options = max(int(np.isfinite(row).sum()), c.num_negatives)
        picked = rng.sample(range(min(options, len(row))), k=c.num_negatives)
        out.append(sorted(picked, key=lambda i: -row[i]))
    return np.asarray(out, dtype=np.int64)


def _rows(
    queries: list[str],
    own: list[list[int]],
    texts: list[str],
    cand: NDArray[np.int64],
    scores: NDArray[np.float64],
    chosen: NDArray[np.int64],
    c: MiningConfig,
) -> Mined:
    rows: list[tuple[str, ...]] = []
    for qi, query in enumerate(queries):
        picks = [(int(cand[qi, j]), float(scores[qi, j])) for j in chosen[qi]]
        found = [texts[i] for i, s in picks if np.isfinite(s)]
        for p in own[qi]:
            if c.output_format == "triplet":
                rows.extend((query, texts[p], n) for n in found)
            elif len(found) == c.num_negatives:  # n-tuple: only complete rows
                rows.append((query, texts[p], *found))
    if c.output_format == "triplet":
        columns: tuple[str, ...] = ("anchor", "positive", "negative")
    else:
        columns = ("anchor", "positive", *(f"negative_{i}" for i in range(1, c.num_negatives + 1)))
    logger.info("mined %d rows for %d queries over %d texts", len(rows), len(queries), len(texts))
    return Mined(columns, rows)
