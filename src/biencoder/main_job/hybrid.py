"""The main job's BM25 and hybrid rows beside dense retrieval, scored from the same corpus vectors
(``evaluate_modes``), fused as ``biencoder index --lexical`` fuses a folder of that corpus.

Each model's hybrid row on each task takes the label-free fusion decision
(:mod:`biencoder.index.fusion_choice`: probes cut from the task's documents, no query or judgement
read), made for that model when it is evaluated. The row is what a user who indexes the corpus
with the model gets, and no alpha is tuned on queries: not the test queries, and not SciFact's
train queries, which the fine-tuned models saw.
"""

from __future__ import annotations

import logging
from typing import Any

from biencoder.evaluation.base import Evaluator
from biencoder.evaluation.hybrid import FusionSettings
from biencoder.evaluation.retrieval import RetrievalEvaluator
from biencoder.index.fusion import Fusion, ScoreNormalization
from biencoder.memo import MemoEncoder
from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)

FusionRecords = dict[str, dict[str, Any]]  # task -> how its hybrid rows fuse, and each model's choice
HYBRID_TASKS = ("scifact", "trec-dl19")
DECIDED = (
    "the label-free decision of `biencoder index --lexical`, made for each model on the task's corpus "
    "(probes cut from its documents; no query or judgement read)"
)


def fusion_plan() -> FusionRecords:
    """Each hybrid task's record, its per-model ``choices`` filled in as the models are evaluated
    (:func:`record_choices`)."""
    return {task: {"source": DECIDED, "choices": {}} for task in HYBRID_TASKS}


def decide_fusion(evaluator: RetrievalEvaluator, encoder: Encoder) -> tuple[FusionSettings, dict[str, Any]]:
    """The fusion a folder of ``evaluator``'s corpus gets for ``encoder``
    (:meth:`biencoder.index.Index.choose_fusion` on an index of its documents, with the
    evaluator's BM25 settings), and the record of it (the settings and the decision's evidence).
    ``encoder`` should memoise: the evaluation then reuses the corpus vectors."""
    from biencoder.index import Index

    doc_ids = list(evaluator.corpus)
    texts = [evaluator.corpus[d] for d in doc_ids]
    vectors = encoder.encode(texts, batch_size=evaluator.batch_size, show_progress=evaluator.show_progress)
    index = Index(encoder=encoder, lexical=evaluator.lexical_config)
    index.add(doc_ids, vectors, texts=texts)
    record = index.choose_fusion()
    fusion = Fusion.parse(record.fusion)
    settings = FusionSettings(
        fusion=fusion,
        alpha=record.alpha if fusion is Fusion.CONVEX else None,
        normalization=ScoreNormalization.parse(record.normalization),
        adaptive=record.adaptive,
    )
    evidence = record.evidence or {}
    logger.info("%s: hybrid fuses as the decision chose: %s", evaluator.name, evidence.get("reason"))
    return settings, {**settings.to_dict(), "evidence": evidence}


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
    same corpus vectors by ``evaluate_modes``. ``fusion`` None: each model's hybrid fuses as the
    label-free decision chooses for it (:func:`decide_fusion`), kept in ``decision``."""

    def __init__(self, inner: Any, fusion: FusionSettings | None, lexical: bool) -> None:
        self.inner, self.fusion = inner, fusion
        self.modes = ("dense", "lexical", "hybrid") if lexical else ("dense", "hybrid")
        self.last: dict[str, dict[str, float]] = {}
        self.decision: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def primary_metric(self) -> str:
        return str(self.inner.primary_metric)

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        fusion = self.fusion
        if fusion is None:
            encoder = MemoEncoder(encoder)  # the corpus is embedded once, for the decision and the rows
            fusion, self.decision = decide_fusion(self.inner, encoder)
        results = self.inner.evaluate_modes(encoder, self.modes, fusion)
        self.last = {name: {k: float(v) for k, v in m.items()} for name, m in results.items()}
        return self.last[self.name]


def with_hybrid(evaluators: list[Evaluator], fusion: FusionRecords, lexical: bool) -> list[Evaluator]:
    """``evaluators`` with each hybrid task's wrapped in a HybridEvaluator: fused as its record
    says, or (a record with ``choices``) as the decision chooses for each model."""
    return [
        HybridEvaluator(e, None if "choices" in fusion[e.name] else fusion_settings(fusion[e.name]), lexical)
        if e.name in fusion
        else e
        for e in evaluators
    ]


def record_choices(fusion: FusionRecords, evaluators: list[Evaluator], model: str) -> None:
    """Put each hybrid evaluator's last decision in its task's record, under ``model``."""
    for e in evaluators:
        if isinstance(e, HybridEvaluator) and e.decision is not None and "choices" in fusion.get(e.name, {}):
            fusion[e.name]["choices"][model] = e.decision


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
