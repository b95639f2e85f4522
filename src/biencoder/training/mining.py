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

Beyond sentence-transformers: ``index="hnsw"`` searches the candidates approximately (faiss
HNSW, for corpora too large for exact search), and ``bm25_candidates=n`` adds each query's n
best BM25 texts (``bm25s``, English stop words) to the dense candidates, the union ranked by
reciprocal rank fusion of the two rankings (k=60) instead of the dense score alone, so that
lexically close texts reach the window; every filter and margin still uses the model's score.
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
    index: str = "exact"  # or hnsw: approximate candidate search for large corpora
    bm25_candidates: int = 0  # > 0: BM25's top n per query join the candidates (rank fusion)

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {self.num_negatives}")
        if self.range_min < 0:
            raise ValueError(f"range_min must be non-negative, got {self.range_min}")
        if self.sampling_strategy not in STRATEGIES:
            raise ValueError(f"sampling_strategy must be one of {STRATEGIES}, got {self.sampling_strategy!r}")
        if self.output_format not in FORMATS:
            raise ValueError(f"output_format must be one of {FORMATS}, got {self.output_format!r}")
        if self.index not in ("exact", "hnsw"):
            raise ValueError(f"index must be exact or hnsw, got {self.index!r}")
        if self.bm25_candidates < 0:
            raise ValueError(f"bm25_candidates must be >= 0, got {self.bm25_candidates}")

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
    scores, cand = _candidates(encoder, corpus_emb, query_emb, range_max + max_positives + 1, config.index)
    key = scores  # the order of candidates: the model's score, or the fused rank with BM25
    if config.bm25_candidates:
        lexical = _bm25(texts, queries, config.bm25_candidates)
        scores, cand, key = _fuse(encoder, corpus_emb, query_emb, scores, cand, lexical)
    for qi, q in enumerate(queries):
        drop = excluded[qi] | ({where[q]} if q in where else set())
        scores[qi, np.isin(cand[qi], list(drop))] = -np.inf
    positive_scores = [
        np.asarray(encoder.similarity(query_emb[qi : qi + 1], corpus_emb[own[qi]]))[0]
        for qi in range(len(queries))
    ]
    _apply_filters(scores, positive_scores, config)
    key = np.where(np.isfinite(scores), key, -np.inf)  # filtered candidates go last
    order = np.argsort(-key, axis=1, kind="stable")[:, :range_max]  # best first
    cand = np.take_along_axis(cand, order, axis=1)[:, config.range_min :]
    scores = np.take_along_axis(scores, order, axis=1)[:, config.range_min :]
    chosen = _sample(scores, config)
    return _rows(queries, own, texts, cand, scores, chosen, config)


def _candidates(
    encoder: Encoder,
    corpus_emb: NDArray[np.float32],
    query_emb: NDArray[np.float32],
    count: int,
    kind: str = "exact",
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """[q, count] scores (-inf padded) and corpus rows (-1 padded) of the nearest texts."""
    index = Index(corpus_emb.shape[1], config=IndexConfig(metric=encoder.similarity_fn_name, kind=kind))
    index.add([str(i) for i in range(len(corpus_emb))], corpus_emb)
    found = index.search(query_emb, min(count, len(corpus_emb)))
    scores = np.full((len(query_emb), count), -np.inf)
    cand = np.full((len(query_emb), count), -1, dtype=np.int64)
    for qi, (ids, vals) in enumerate(zip(found.ids, found.scores, strict=True)):
        cand[qi, : len(ids)] = [int(i) for i in ids]
        scores[qi, : len(vals)] = vals
    return scores, cand


def _bm25(texts: Sequence[str], queries: Sequence[str], k: int) -> NDArray[np.int64]:
    """[q, k'] rows of ``texts`` in BM25 order for each query (k' = min(k, len(texts)))."""
    try:
        import bm25s
    except ImportError:
        raise ImportError("BM25 candidates need bm25s: pip install 'biencoder[mining]'") from None
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)
    found, _ = retriever.retrieve(
        bm25s.tokenize(list(queries), stopwords="en", show_progress=False),
        k=min(k, len(texts)),
        show_progress=False,
    )
    return np.asarray(found, dtype=np.int64)


RRF_K = 60


def _fuse(
    encoder: Encoder,
    corpus_emb: NDArray[np.float32],
    query_emb: NDArray[np.float32],
    scores: NDArray[np.float64],
    cand: NDArray[np.int64],
    lexical: NDArray[np.int64],
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
    """The union of dense and BM25 candidates: model scores, rows, and reciprocal-rank-fusion keys."""
    width = cand.shape[1] + lexical.shape[1]
    out_s = np.full((len(cand), width), -np.inf)
    out_c = np.full((len(cand), width), -1, dtype=np.int64)
    out_k = np.full((len(cand), width), -np.inf)
    for qi in range(len(cand)):
        fused: dict[int, float] = {}
        for rank, row in enumerate(int(r) for r in cand[qi] if r >= 0):
            fused[row] = 1.0 / (RRF_K + rank + 1)
        for rank, row in enumerate(int(r) for r in lexical[qi]):
            fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank + 1)
        rows = np.fromiter(fused, dtype=np.int64, count=len(fused))
        out_c[qi, : len(rows)] = rows
        out_k[qi, : len(rows)] = np.fromiter(fused.values(), dtype=np.float64, count=len(fused))
        out_s[qi, : len(rows)] = np.asarray(encoder.similarity(query_emb[qi : qi + 1], corpus_emb[rows]))[0]
    return out_s, out_c, out_k


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
