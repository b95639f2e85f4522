"""Retrieval evaluation on the BEIR layout: encode queries and corpus, exact top-k, then metrics.

Search is exact: the query-by-corpus score matrix is computed one corpus chunk at a time with
the encoder's own similarity, keeping a running top-k per query. Ties are ordered by document id
(ascending string order), as sentence-transformers' InformationRetrievalEvaluator orders them,
so the ranking does not depend on the chunk size.

Besides dense retrieval, :meth:`RetrievalEvaluator.evaluate_modes` scores lexical (BM25) and
hybrid retrieval (see :mod:`biencoder.evaluation.hybrid`): the corpus is encoded once for the
dense and hybrid modes, and its BM25 index is built once per evaluator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.data.beir import BeirDataset, load_beir
from biencoder.evaluation import metrics
from biencoder.evaluation.hybrid import (
    RANK_DEPTH,
    FusionSettings,
    build_lexical,
    fused_keys,
    needs_encoder,
    parse_modes,
    result_name,
)
from biencoder.index.fusion import SearchMode
from biencoder.index.lexical import Hits, LexicalConfig, LexicalIndex
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)


def top_k(
    query_embeddings: NDArray[np.float32],
    corpus_embeddings: NDArray[np.float32],
    k: int,
    similarity: Callable[[NDArray[np.float32], NDArray[np.float32]], NDArray[np.float32]],
    tie_rank: NDArray[np.int64],
    chunk_size: int = 50_000,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact top-k: (scores [q, k'], corpus indices [q, k']), best first, k' = min(k, corpus size).

    ``similarity(a, b) -> [n, m]`` scores; ``tie_rank[j]`` orders equal scores (lower first).
    Each chunk contributes every candidate at or above its k-th best score (ties included), so
    the merged result is exactly the first k of the total order (-score, tie_rank).
    """
    if k <= 0 or chunk_size <= 0:
        raise ValueError(f"k and chunk_size must be positive, got {k} and {chunk_size}")
    n_queries, n_docs = query_embeddings.shape[0], corpus_embeddings.shape[0]
    k = min(k, n_docs)
    if n_queries == 0 or k == 0:
        return np.zeros((n_queries, k), np.float32), np.zeros((n_queries, k), np.int64)
    best_s = [np.empty(0, np.float32) for _ in range(n_queries)]
    best_i = [np.empty(0, np.int64) for _ in range(n_queries)]
    for start in range(0, n_docs, chunk_size):
        chunk = np.asarray(
            similarity(query_embeddings, corpus_embeddings[start : start + chunk_size])
        )  # [q, c]
        kk = min(k, chunk.shape[1])
        kth = -np.partition(-chunk, kk - 1, axis=1)[:, kk - 1]  # [q] each row's k-th best score
        for row in range(n_queries):
            cand = np.flatnonzero(chunk[row] >= kth[row])
            s = np.concatenate([best_s[row], chunk[row, cand]])
            i = np.concatenate([best_i[row], cand + start])
            order = np.lexsort((tie_rank[i], -s))[:k]  # score descending, then doc id ascending
            best_s[row], best_i[row] = s[order], i[order]
    return np.stack(best_s), np.stack(best_i)


@dataclass(frozen=True, kw_only=True)
class RetrievalEvaluator:
    """Retrieval metrics (``ndcg@10``, ``mrr@10``, ``recall@10`` ...) of an encoder on a judged collection.

    ``relevance_threshold``: the least grade that counts as relevant for the binary metrics
    (TREC DL: 2); nDCG always uses the grades. Calling the evaluator scores dense retrieval;
    :meth:`evaluate_modes` scores dense, lexical (BM25 with ``lexical``, default
    ``LexicalConfig()``) and hybrid retrieval in one pass.
    """

    name: str
    queries: Mapping[str, str]
    corpus: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]
    relevance_threshold: int = 1
    k_values: tuple[int, ...] = metrics.K_VALUES
    batch_size: int = 32
    corpus_chunk_size: int = 50_000
    show_progress: bool | None = None
    primary_metric: str = "ndcg@10"
    lexical: LexicalConfig | None = None
    # each evaluated query's metrics from the latest call (paired comparisons of two models): the
    # dense mode's; ``last_per_query_by_name`` holds every mode's of the latest call, by result name
    last_per_query: dict[str, dict[str, float]] = field(default_factory=dict, compare=False, repr=False)
    last_per_query_by_name: dict[str, dict[str, dict[str, float]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _query_ids: tuple[str, ...] = field(init=False, repr=False)
    _bm25: dict[LexicalConfig, LexicalIndex] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ValueError(f"{self.name}: the corpus is empty")
        if self.batch_size <= 0 or self.corpus_chunk_size <= 0:
            raise ValueError(f"{self.name}: batch_size and corpus_chunk_size must be positive")
        if not self.k_values or min(self.k_values) <= 0:
            raise ValueError(f"{self.name}: k_values must be positive, got {self.k_values}")
        if self.lexical is not None and not isinstance(self.lexical, LexicalConfig):
            raise TypeError(f"{self.name}: lexical must be a LexicalConfig or None, got {self.lexical!r}")
        missing = [q for q in self.qrels if q not in self.queries]
        if missing:
            raise ValueError(f"{self.name}: {len(missing)} judged queries have no text, e.g. {missing[0]!r}")
        kept = tuple(q for q in self.qrels if metrics.has_relevant(self.qrels[q], self.relevance_threshold))
        if not kept:
            raise ValueError(
                f"{self.name}: no query has a document with relevance >= {self.relevance_threshold}"
            )
        if len(kept) < len(self.qrels):
            logger.warning(
                "%s: %d of %d judged queries have no document with relevance >= %d; left out",
                self.name,
                len(self.qrels) - len(kept),
                len(self.qrels),
                self.relevance_threshold,
            )
        object.__setattr__(self, "_query_ids", kept)
        object.__setattr__(self, "_bm25", {})

    @classmethod
    def from_beir(
        cls,
        folder: str | Path,
        split: str = "test",
        *,
        name: str | None = None,
        max_queries: int | None = None,
        **kwargs: Any,
    ) -> RetrievalEvaluator:
        """Load a BEIR folder (queries without judgements in ``split`` are dropped).

        ``max_queries`` keeps the first n judged queries (quick checks); the corpus is kept whole.
        """
        return cls.from_dataset(
            load_beir(folder, split), name=name or Path(folder).name, max_queries=max_queries, **kwargs
        )

    @classmethod
    def from_dataset(
        cls, data: BeirDataset, *, name: str, max_queries: int | None = None, **kwargs: Any
    ) -> RetrievalEvaluator:
        """A collection already read (BEIR, WikiQA): its corpus, queries and qrels."""
        qrels = data.qrels
        if max_queries is not None:
            qrels = dict(list(qrels.items())[:max_queries])
        return cls(name=name, queries=data.queries, corpus=data.corpus, qrels=qrels, **kwargs)

    @property
    def query_ids(self) -> tuple[str, ...]:
        return self._query_ids

    def _depth(self, k: int | None) -> int:
        return k or max(*self.k_values, RANK_DEPTH)

    def _dense_candidates(
        self, encoder: Encoder, doc_ids: list[str], fetch: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Exact dense top-``fetch`` (scores, corpus positions) [q, fetch'] of every evaluated query."""
        tie_rank = np.empty(len(doc_ids), dtype=np.int64)
        tie_rank[np.argsort(np.array(doc_ids, dtype=object), kind="stable")] = np.arange(len(doc_ids))
        logger.info("%s: encoding %d queries and %d documents", self.name, len(self.query_ids), len(doc_ids))
        q_emb = encoder.encode(
            [self.queries[q] for q in self.query_ids],
            batch_size=self.batch_size,
            show_progress=self.show_progress,
        )
        d_emb = encoder.encode(
            [self.corpus[d] for d in doc_ids], batch_size=self.batch_size, show_progress=self.show_progress
        )
        return top_k(q_emb, d_emb, fetch, encoder.similarity, tie_rank, self.corpus_chunk_size)

    @property
    def lexical_config(self) -> LexicalConfig:
        """The BM25 settings the corpus is searched with (``lexical``, else the defaults)."""
        return self.lexical if self.lexical is not None else LexicalConfig()

    def bm25(self) -> LexicalIndex:
        """The corpus's BM25 index (row n: the n-th document), built on first use and kept."""
        config = self.lexical_config
        if config not in self._bm25:
            logger.info("%s: building the BM25 index of %d documents", self.name, len(self.corpus))
            self._bm25[config] = build_lexical(list(self.corpus.values()), config)
        return self._bm25[config]

    def rank(self, encoder: Encoder, k: int | None = None) -> dict[str, list[str]]:
        """Each evaluated query's top-k document ids, best first (k defaults to the largest needed)."""
        return self.rank_modes(encoder, (SearchMode.DENSE,), k=k)[SearchMode.DENSE]

    def rank_modes(
        self,
        encoder: Encoder | None,
        modes: str | Sequence[str | SearchMode],
        fusion: FusionSettings | None = None,
        k: int | None = None,
    ) -> dict[SearchMode, dict[str, list[str]]]:
        """Each mode's top-k document ids per evaluated query, best first; the corpus is encoded
        once for dense and hybrid, and ``encoder`` may be None when the only mode is lexical."""
        wanted, fusion, k = parse_modes(modes), fusion or FusionSettings(), self._depth(k)
        if needs_encoder(wanted) and encoder is None:
            raise ValueError(f"{self.name}: dense and hybrid retrieval need an encoder")
        fetch = max(k, fusion.candidates) if SearchMode.HYBRID in wanted else k
        doc_ids = list(self.corpus)
        lexical: list[Hits] = (
            self.bm25().search([self.queries[q] for q in self.query_ids], fetch)
            if SearchMode.LEXICAL in wanted or SearchMode.HYBRID in wanted
            else []
        )
        empty = np.zeros((len(self.query_ids), 0), dtype=np.int64)
        scores, positions = (
            self._dense_candidates(encoder, doc_ids, fetch)
            if encoder is not None and needs_encoder(wanted)
            else (empty.astype(np.float32), empty)
        )
        out: dict[SearchMode, dict[str, list[str]]] = {}
        for mode in wanted:
            if mode is SearchMode.DENSE:
                keys = [row[:k] for row in positions]
            elif mode is SearchMode.LEXICAL:
                keys = [pos[:k] for pos, _ in lexical]
            else:
                texts = [self.queries[q] for q in self.query_ids]
                scales = self.bm25().query_scales(texts) if fusion.needs_scales else None
                keys = fused_keys(scores, positions, lexical, fusion, k, scales)
            out[mode] = {q: [doc_ids[j] for j in row] for q, row in zip(self.query_ids, keys, strict=True)}
        return out

    def _score(
        self, rankings: Mapping[str, Sequence[str]]
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(mean metrics, each query's metrics) of rankings of the evaluated queries."""
        qrels = {q: self.qrels[q] for q in self.query_ids}
        t, ks = self.relevance_threshold, self.k_values
        mean = metrics.retrieval_metrics(rankings, qrels, threshold=t, k_values=ks)
        per_query = {q: metrics.query_metrics(rankings[q], qrels[q], threshold=t, k_values=ks) for q in qrels}
        return mean, per_query

    def evaluate_modes(
        self,
        encoder: Encoder | None,
        modes: str | Sequence[str | SearchMode],
        fusion: FusionSettings | None = None,
    ) -> dict[str, dict[str, float]]:
        """Each mode's metrics under its result name (``scifact``, ``scifact-bm25``, ``scifact-hybrid``)."""
        rankings = self.rank_modes(encoder, modes, fusion)
        results: dict[str, dict[str, float]] = {}
        self.last_per_query_by_name.clear()
        for mode, ranked in rankings.items():
            name = result_name(self.name, mode)
            results[name], per_query = self._score(ranked)
            self.last_per_query_by_name[name] = per_query
            if mode is SearchMode.DENSE:
                self.last_per_query.clear()
                self.last_per_query.update(per_query)
            logger.info(
                "%s: %s = %.4f over %d queries",
                name,
                self.primary_metric,
                results[name][self.primary_metric],
                len(ranked),
            )
        return results

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        return self.evaluate_modes(encoder, (SearchMode.DENSE,))[self.name]


def subset(
    evaluator: RetrievalEvaluator, query_ids: Sequence[str], extra_docs: int = 0, seed: int = 0
) -> RetrievalEvaluator:
    """A smaller copy: the given queries, their judged documents and ``extra_docs`` random others."""
    qrels = {q: evaluator.qrels[q] for q in query_ids}
    judged = {d for qrel in qrels.values() for d in qrel if d in evaluator.corpus}
    others = sorted(set(evaluator.corpus) - judged)
    rng = np.random.default_rng(seed)
    picked = (
        set(rng.choice(others, size=min(extra_docs, len(others)), replace=False).tolist())
        if others
        else set()
    )
    corpus = {d: t for d, t in evaluator.corpus.items() if d in judged or d in picked}
    return RetrievalEvaluator(
        name=evaluator.name,
        queries=evaluator.queries,
        corpus=corpus,
        qrels=qrels,
        relevance_threshold=evaluator.relevance_threshold,
        k_values=evaluator.k_values,
        batch_size=evaluator.batch_size,
        corpus_chunk_size=evaluator.corpus_chunk_size,
        show_progress=evaluator.show_progress,
        primary_metric=evaluator.primary_metric,
        lexical=evaluator.lexical,
    )
