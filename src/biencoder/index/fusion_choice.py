"""The label-free fusion decision: which hybrid setting (or dense alone) a corpus gets by default.

Each candidate setting (:func:`decision_candidates`) searches the corpus's probes (:mod:`.probes`:
a piece cut out of a document as the query, the rest of the document as its one relevant
target), and scores the reciprocal rank of the target in its top ``k``. :func:`decide` keeps
dense alone unless a candidate beats it on the probes beyond doubt: the candidate with the
highest one-sided lower confidence bound (``Z`` standard errors, paired over the probes) on its
MRR@10 gain over dense, if that bound is above zero. A corpus whose probes show no gain (BM25
weak, or too few probes to tell) keeps the dense order, with cosine scores (alpha 1.0).

Why a bound and not the best probe MRR: the probes are not the user's queries (they cut text
out of a passage, so they favour dense on corpora of short texts), and over many candidates the
best of them wins partly by chance. Measured on the test bed (:mod:`biencoder.evaluation.testbed`,
8 corpora, 2 splits, 2 models; docs/search.md has the table): the bound keeps dense where BM25 is
weak and finds the gain where it is strong (SciFact). Where BM25 edges out dense on short texts
(MRPC) the probes cannot show it, and the default stays on dense, up to 0.006 below BM25. No part
of it is fitted to a corpus (``Z`` is the usual 95% one-sided quantile; the candidates a grid).

Everything here works on the store contract (``search(..., mode="dense" | "lexical")``) and plain
arrays, through the same :func:`~biencoder.index.hybrid.fuse_sides` as search, so any backend can
feed it: :func:`choose_fusion` builds the probe corpus, has the caller put it in a store of its
backend, and decides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.index.config import FusionRecord, IndexConfig
from biencoder.index.fusion import DEFAULT_CANDIDATES, Fusion, ScoreNormalization, SearchMode
from biencoder.index.hybrid import NO_LEXICAL_PART, SearchSettings, fuse_sides
from biencoder.index.lexical import Hits
from biencoder.index.probes import make_probes, probe_corpus

logger = logging.getLogger(__name__)

K = 10  # the reciprocal rank is counted in the top 10, as MRR@10
Z = 1.645  # one-sided 95%: a candidate must beat dense on the probes by this many standard errors
PROBES = 256  # probes per decision: on SciFact about 6% of `biencoder index` time (docs/search.md)
MAX_DOCS = 20_000  # the probe corpus: every probe's document and others drawn, up to this many
DENSE = "dense"


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """One setting the decision may choose: convex fusion at ``alpha`` (1.0: the dense list as it
    is), or reciprocal rank fusion."""

    label: str
    alpha: float = 1.0
    normalization: str = "calibrated"
    adaptive: bool = False
    fusion: str = "convex"

    def settings(self, k: int, candidates: int) -> SearchSettings:
        return SearchSettings(
            mode=SearchMode.HYBRID,
            fusion=Fusion.parse(self.fusion),
            alpha=self.alpha,
            normalization=ScoreNormalization.parse(self.normalization),
            adaptive=self.adaptive,
            k=k,
            candidates=candidates,
        )


def convex_candidates(normalization: str, alphas: Sequence[float], adaptive: bool = False) -> list[Candidate]:
    tag = f"{normalization}{' adaptive' if adaptive else ''}"
    return [
        Candidate(label=f"{tag} {a:.1f}", alpha=a, normalization=normalization, adaptive=adaptive)
        for a in alphas
    ]


def fused_top(
    dense_scores: NDArray[np.float32],
    dense_positions: NDArray[np.int64],
    lexical: list[Hits],
    candidate: Candidate,
    lexical_scales: NDArray[np.float64] | None = None,
    k: int = K,
) -> list[NDArray[np.int64]]:
    """Each query's top ``k`` row positions under ``candidate``: ``dense_scores`` and
    ``dense_positions`` [queries, n] are each query's dense list (position -1: nothing),
    ``lexical`` its BM25 hits, ``lexical_scales`` its BM25 scales (calibrated candidates)."""
    fetch = dense_positions.shape[1] if dense_positions.ndim == 2 else 0
    settings = candidate.settings(k, max(fetch, k))
    scales = lexical_scales if candidate.normalization == "calibrated" else None
    return [f.keys[:k] for f in fuse_sides(dense_scores, dense_positions, lexical, settings, scales)]


def reciprocal_ranks(
    dense_scores: NDArray[np.float32],
    dense_positions: NDArray[np.int64],
    lexical: list[Hits],
    targets: NDArray[np.int64],
    candidates: Sequence[Candidate],
    lexical_scales: NDArray[np.float64] | None = None,
    k: int = K,
) -> NDArray[np.float64]:
    """[probes, candidates]: 1 / rank of each probe's target (row position ``targets[q]``) in each
    candidate's fused top ``k``, 0 when it is not there (see :func:`fused_top`)."""
    out = np.zeros((len(targets), len(candidates)), dtype=np.float64)
    for c, candidate in enumerate(candidates):
        tops = fused_top(dense_scores, dense_positions, lexical, candidate, lexical_scales, k)
        for q, top in enumerate(tops):
            hit = np.flatnonzero(top == targets[q])
            if len(hit):
                out[q, c] = 1.0 / (hit[0] + 1)
    return out


def decision_candidates(normalization: str = "calibrated") -> list[Candidate]:
    """The settings the decision weighs against dense alone: the adaptive weight at alpha 0.5 to
    0.9 on calibrated scores (the untuned default, 0.7, among them), or convex fusion at 0.5 to
    0.9 on min-max scores, for stores whose lexical side has no BM25 scale (LanceDB, pgvector).

    A short grid of smooth settings: with the fixed weights down to 0.0 as well, the best lower
    bound on the probes of 21-query DL19-mini picked alpha 0.3 or 0.4 in some probe draws, 0.009
    below dense on its real queries (benchmarks/hybrid_decision.py, docs/search.md)."""
    norm = ScoreNormalization.parse(normalization).value
    alphas = [0.5, 0.6, 0.7, 0.8, 0.9]
    return convex_candidates(norm, alphas, adaptive=norm == ScoreNormalization.CALIBRATED.value)


def decide(
    dense_rr: NDArray[np.float64],
    rr: NDArray[np.float64],
    candidates: Sequence[Candidate],
    *,
    z: float = Z,
    normalization: str = "calibrated",
) -> FusionRecord:
    """The chosen setting, from each probe's reciprocal rank under dense alone (``dense_rr``
    [probes]) and under each candidate (``rr`` [probes, candidates]); see the module docstring.

    The evidence kept: the number of probes, dense's and every candidate's probe MRR@10, the
    chosen one's lower bound on its gain and why it was chosen."""
    n = len(dense_rr)
    if rr.shape != (n, len(candidates)):
        raise ValueError(f"rr must be [probes, candidates] = [{n}, {len(candidates)}], got {rr.shape}")
    gains = rr - dense_rr[:, None]  # [probes, candidates]
    mean = gains.mean(axis=0) if n else np.zeros(len(candidates))
    spread = gains.std(axis=0, ddof=1) if n > 1 else np.zeros(len(candidates))
    bound = mean - z * spread / np.sqrt(max(n, 1))
    best = int(np.argmax(bound)) if len(candidates) else -1
    mrr = {
        c.label: round(float(m), 4) for c, m in zip(candidates, rr.mean(axis=0) if n else mean, strict=True)
    }
    evidence: dict[str, Any] = {
        "probes": n,
        "dense_mrr": round(float(dense_rr.mean()) if n else 0.0, 4),
        "mrr": mrr,
        "z": z,
    }
    if best < 0 or n < 2 or bound[best] <= 0:
        top = max(mrr, key=lambda label: mrr[label]) if mrr else None
        evidence["choice"] = DENSE
        evidence["reason"] = (
            f"no setting beats dense on the {n} probes by {z:g} standard errors"
            + (f" (best: {top}, MRR@10 {mrr[top]:.4f} against {evidence['dense_mrr']:.4f})" if top else "")
            + ": hybrid keeps the dense order"
        )
        return FusionRecord(alpha=1.0, normalization=normalization, source="chosen", evidence=evidence)
    chosen = candidates[best]
    evidence["choice"] = chosen.label
    evidence["lower_bound"] = round(float(bound[best]), 4)
    evidence["reason"] = (
        f"{chosen.label} beats dense on the {n} probes: MRR@10 {mrr[chosen.label]:.4f} against "
        f"{evidence['dense_mrr']:.4f}, gain >= {bound[best]:.4f} at {z:g} standard errors"
    )
    return FusionRecord(
        alpha=chosen.alpha,
        fusion=chosen.fusion,
        normalization=chosen.normalization,
        adaptive=chosen.adaptive,
        source="chosen",
        evidence=evidence,
    )


Encode = Callable[[list[str]], NDArray[np.float32]]
MakeStore = Callable[[list[str], NDArray[np.float32], list[str]], Any]  # ids, vectors, texts -> store


def choose_fusion(
    texts: Sequence[str | None],
    vectors_of: Callable[[NDArray[np.int64]], NDArray[np.float32]],
    encode: Encode,
    make_store: MakeStore,
    *,
    probes: int = PROBES,
    max_docs: int = MAX_DOCS,
    candidates: int = DEFAULT_CANDIDATES,
    seed: int = 0,
) -> FusionRecord:
    """The fusion a corpus gets by default, decided without labels.

    ``texts`` are the corpus rows (None: a row without text), ``vectors_of(rows)`` their stored
    vectors [len(rows), dim], ``encode`` embeds texts as the rows were embedded, ``make_store``
    puts (ids, vectors, texts) in a temporary store of the corpus's backend, with a lexical part.
    Probes are cut from the rows, their documents replaced by the rest of them in a probe corpus
    of up to ``max_docs`` rows, searched on each side (``candidates`` deep), fused by every
    candidate setting and scored by :func:`decide`.
    """
    start = time.perf_counter()
    cut = make_probes(texts, probes, seed=seed)
    if not len(cut):
        record = decide(np.zeros(0), np.zeros((0, 0)), [], normalization="calibrated")
        return _timed(record, start, 0)
    rows = probe_corpus(len(texts), cut, max(max_docs, len(cut)), seed=seed)
    where = np.searchsorted(rows, cut.rows)  # each probe's target: its row in the probe corpus
    corpus = [texts[r] or "" for r in rows]
    for w, target in zip(where, cut.targets, strict=True):
        corpus[w] = target
    vectors = np.array(vectors_of(rows), dtype=np.float32)
    vectors[where] = encode(cut.targets)
    queries = encode(cut.queries)
    store = make_store([str(i) for i in range(len(rows))], vectors, corpus)
    fetch = min(candidates, len(rows))
    dense = store.search(queries, fetch, mode="dense")
    lexical = store.search(list(cut.queries), fetch, mode="lexical")
    scales_of = getattr(store, "lexical_scales", None)
    scales = scales_of(cut.queries) if scales_of is not None else None
    normalization = "calibrated" if scales is not None else "minmax"
    positions = np.full((len(cut), fetch), -1, dtype=np.int64)
    scores = np.zeros((len(cut), fetch), dtype=np.float32)
    for q, (ids, values) in enumerate(zip(dense.ids, dense.scores, strict=True)):
        positions[q, : len(ids)] = [int(i) for i in ids]
        scores[q, : len(ids)] = values
    hits: list[Hits] = [
        (np.asarray([int(i) for i in ids], dtype=np.int64), np.asarray(values, dtype=np.float32))
        for ids, values in zip(lexical.ids, lexical.scores, strict=True)
    ]
    options = decision_candidates(normalization)
    dense_only = Candidate(label=DENSE, alpha=1.0, normalization=normalization)
    rr = reciprocal_ranks(scores, positions, hits, where, [dense_only, *options], scales)
    record = decide(rr[:, 0], rr[:, 1:], options, normalization=normalization)
    return _timed(record, start, len(rows))


def _timed(record: FusionRecord, start: float, docs: int) -> FusionRecord:
    evidence = {**(record.evidence or {}), "docs": docs, "seconds": round(time.perf_counter() - start, 2)}
    logger.info("fusion decision (%.1f s): %s", evidence["seconds"], evidence.get("reason"))
    return replace(record, evidence=evidence)


def choose_index_fusion(index: Any, *, encoder: Any = None, **options: Any) -> FusionRecord:
    """:func:`choose_fusion` for an in-process :class:`~biencoder.index.Index` (with its lexical
    part and stored texts), its probe corpus in a scratch ``Index`` of the same metric and BM25
    settings; ``encoder`` defaults to the index's own. ``options``: those of :func:`choose_fusion`."""
    from biencoder.index.core import Index

    if not index.has_lexical:
        raise ValueError(NO_LEXICAL_PART)
    encoder = encoder if encoder is not None else index.encoder
    if encoder is None:
        raise ValueError("the fusion decision embeds its probes: give the index an encoder (encoder=)")
    ids = index.ids
    if not ids:
        raise ValueError("the index is empty: the fusion decision cuts its probes from the rows' texts")
    texts = index.texts_of(ids)
    if all(t is None for t in texts):
        raise ValueError(
            "the fusion decision cuts its probes from the rows' texts, and this index keeps none: "
            "add the rows with texts= (as `biencoder index --lexical` does)"
        )

    def vectors_of(rows: NDArray[np.int64]) -> NDArray[np.float32]:
        return np.stack([index.get(ids[r]) for r in rows]).astype(np.float32)

    def make_store(row_ids: list[str], vectors: NDArray[np.float32], row_texts: list[str]) -> Index:
        probe = Index(index.dim, config=IndexConfig(metric=index.metric), lexical=index.lexical_config)
        probe.add(row_ids, vectors, texts=row_texts)
        return probe

    def encode(batch: list[str]) -> NDArray[np.float32]:
        return np.asarray(encoder.encode(batch), dtype=np.float32)

    return choose_fusion(texts, vectors_of, encode, make_store, **options)
