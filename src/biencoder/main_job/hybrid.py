"""The main job's BM25 and hybrid rows beside dense retrieval, scored from the same corpus vectors
(``evaluate_modes``), and the fusion settings of each hybrid task.

SciFact's hybrid weight is the base model's pick by k-fold cross-validation on SciFact *train*
queries (min-max normalisation); the fine-tuned models saw every train query, so tuning on them
would overrate the dense side, and they reuse the base model's pick. DL19-mini has no train
queries: its hybrid row uses search's untuned default.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from biencoder.evaluation.base import Evaluator
from biencoder.evaluation.fusion_cv import cross_validate, parse_grid
from biencoder.evaluation.hybrid import RANK_DEPTH, Candidates, FusionSettings, alpha_scores
from biencoder.evaluation.retrieval import RetrievalEvaluator, subset, top_k
from biencoder.evaluation.tasks import TaskOptions
from biencoder.index.fusion import DEFAULT_CANDIDATES, ScoreNormalization
from biencoder.main_job.settings import FUSION_CV
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)

FusionRecords = dict[str, dict[str, Any]]  # task -> FusionSettings.to_dict() and where it came from


def fusion_choices(encoder: Encoder, data: Path, limit: int | None, options: TaskOptions) -> FusionRecords:
    """Each hybrid task's fusion settings and where they come from. SciFact's alpha: the base
    model's k-fold cross-validated pick on SciFact train queries; the corpus vectors come from
    ``encoder`` (a MemoEncoder: the test evaluation then reuses them)."""
    folds, fetch = int(FUSION_CV["folds"]), max(DEFAULT_CANDIDATES, RANK_DEPTH)
    train = RetrievalEvaluator.from_beir(data / "scifact", "train", name="scifact-train")
    if limit is not None:  # quick checks: as many train queries as the folds need, a small corpus
        train = subset(train, train.query_ids[: max(limit, folds)], extra_docs=10 * limit)
    doc_ids, texts = list(train.corpus), [train.queries[q] for q in train.query_ids]
    logger.info("choosing SciFact's hybrid alpha on %d train queries (%d-fold CV)", len(texts), folds)
    show = options.show_progress
    q_emb = encoder.encode(texts, batch_size=options.batch_size, show_progress=show)
    d_emb = encoder.encode(list(train.corpus.values()), batch_size=options.batch_size, show_progress=show)
    tie_rank = np.empty(len(doc_ids), dtype=np.int64)  # equal scores: smaller doc id first, as evaluated
    tie_rank[np.argsort(np.array(doc_ids, dtype=object), kind="stable")] = np.arange(len(doc_ids))
    scores, keys = top_k(q_emb, d_emb, fetch, encoder.similarity, tie_rank)
    candidates = Candidates(
        ids=doc_ids, dense_keys=keys, dense_scores=scores, lexical=train.bm25().search(texts, fetch)
    )
    grid = parse_grid(str(FUSION_CV["grid"]))
    minmax = ScoreNormalization.parse(str(FUSION_CV["normalization"]))
    per_query = alpha_scores(
        candidates, [train.qrels[q] for q in train.query_ids], grid, normalization=minmax
    )
    cv = cross_validate(per_query, grid, folds=folds, seed=int(FUSION_CV["seed"]))
    picked = FusionSettings(alpha=cv.alpha, normalization=minmax, candidates=fetch)
    return {
        "scifact": {
            **picked.to_dict(),
            "source": f"the base model's {folds}-fold cross-validation on {len(texts)} SciFact train "
            "queries; the fine-tuned models reuse it (they trained on those queries, which would "
            "overrate the dense side)",
            "cv_ndcg@10": cv.cv_score,
            "fold_alphas": [f.alpha for f in cv.folds],
            "train_ndcg@10_by_alpha": {f"{a:g}": m for a, m in zip(cv.grid, cv.means, strict=True)},
        },
        "trec-dl19": {
            **FusionSettings().to_dict(),
            "source": "hybrid search's untuned default (DL19-mini has no train queries to tune on)",
        },
    }


def fusion_settings(record: dict[str, Any]) -> FusionSettings:
    """The FusionSettings a report's fusion record describes."""
    return FusionSettings(
        fusion=record["fusion"],
        alpha=record["alpha"],
        normalization=record["normalization"],
        adaptive=record["adaptive"],
        candidates=record["candidates"],
    )


class HybridEvaluator:
    """A retrieval evaluator that returns its dense metrics (training histories read as before)
    and keeps, in ``last``, its hybrid (with ``lexical``, also BM25) results, scored from the
    same corpus vectors by ``evaluate_modes``."""

    def __init__(self, inner: Any, fusion: FusionSettings, lexical: bool) -> None:
        self.inner, self.fusion = inner, fusion
        self.modes = ("dense", "lexical", "hybrid") if lexical else ("dense", "hybrid")
        self.last: dict[str, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def primary_metric(self) -> str:
        return str(self.inner.primary_metric)

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        results = self.inner.evaluate_modes(encoder, self.modes, self.fusion)
        self.last = {name: {k: float(v) for k, v in m.items()} for name, m in results.items()}
        return self.last[self.name]


def with_hybrid(evaluators: list[Evaluator], fusion: FusionRecords, lexical: bool) -> list[Evaluator]:
    """``evaluators`` with each hybrid task's wrapped in a HybridEvaluator."""
    return [
        HybridEvaluator(e, fusion_settings(fusion[e.name]), lexical) if e.name in fusion else e
        for e in evaluators
    ]


def merge_hybrid(
    results: dict[str, dict[str, float]], evaluators: list[Evaluator]
) -> dict[str, dict[str, float]]:
    """``results`` with each hybrid evaluator's extra rows (``scifact-bm25``, ``scifact-hybrid``)
    after its own."""
    extra = {e.name: e.last for e in evaluators if isinstance(e, HybridEvaluator)}
    out: dict[str, dict[str, float]] = {}
    for name, metrics in results.items():
        out[name] = metrics
        out.update({k: v for k, v in extra.get(name, {}).items() if k != name})
    return out
