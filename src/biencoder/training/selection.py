"""Choosing the saved model on a dev set: the evaluator of ``eval_data`` and the best checkpoint kept.

``eval_data`` is a BEIR folder, judged by its ``eval_split`` qrels (``eval_extra_docs`` keeps the
judged documents and that many seeded random others, so that a dev evaluation costs seconds
rather than minutes), or an STS file (.csv / .tsv of sentence pairs and gold scores). It runs
every ``eval_steps`` steps, or at the end of every epoch when no ``eval_steps`` is given, and at
the last step. With ``keep_best`` (a metric of that evaluator, ``ndcg@10`` or its full name
``scifact-dev_ndcg@10``) the weights of the best evaluation so far are kept in
``<checkpoints>/best`` (written atomically, so an interrupted run resumes with them) and are the
model saved at the end: sentence-transformers' ``load_best_model_at_end`` with
``metric_for_best_model`` (greater is better; ties keep the earlier step).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from biencoder.encoder import SentenceEncoder
from biencoder.evaluation.base import Evaluator
from biencoder.training.checkpoint import TrainState
from biencoder.training.config import TrainConfig

logger = logging.getLogger(__name__)

BEST_DIR = "best"


def dev_evaluator(config: TrainConfig, show_progress: bool | None = None) -> Evaluator | None:
    """The evaluator of ``config.eval_data`` (None without one); a missing path is a clear error."""
    if config.eval_data is None:
        return None
    path = Path(config.eval_data)
    if path.is_dir():
        from biencoder.evaluation.retrieval import RetrievalEvaluator, subset

        name = f"{path.name}-{config.eval_split}"
        ev = RetrievalEvaluator.from_beir(path, config.eval_split, name=name, show_progress=show_progress)
        if config.eval_extra_docs is not None:
            ev = subset(ev, ev.query_ids, extra_docs=config.eval_extra_docs, seed=config.seed)
        logger.info("dev set %s: %d queries, %d documents", name, len(ev.query_ids), len(ev.corpus))
        return ev
    if path.is_file():
        from biencoder.evaluation.sts import StsEvaluator

        return StsEvaluator.from_file(path, name=f"{path.stem}", show_progress=show_progress)
    raise FileNotFoundError(
        f"eval_data {path} not found: give a BEIR folder (with qrels/{config.eval_split}.tsv) "
        "or an STS file (.csv / .tsv)"
    )


def metric_key(wanted: str, row: dict[str, float], evaluator: Evaluator | None) -> str:
    """``wanted`` as a column of the evaluation ``row``: as given, or prefixed with the dev set's name."""
    if wanted in row:
        return wanted
    if evaluator is not None and f"{evaluator.name}_{wanted}" in row:
        return f"{evaluator.name}_{wanted}"
    known = sorted(k for k in row if k not in ("epoch", "step"))
    raise ValueError(f"keep_best: no metric {wanted!r} in the evaluation; known: {', '.join(known)}")


@dataclass
class KeepBest:
    """Tracks the best evaluation by one metric and keeps its weights on disk."""

    metric: str
    folder: Path  # <checkpoints>/best
    evaluator: Evaluator | None = None

    def update(
        self, state: TrainState, row: dict[str, float], encoder: SentenceEncoder, is_main: bool
    ) -> bool:
        """Record ``row`` (the evaluation at ``state.step``); True when it is the best so far."""
        from biencoder.atomic import atomic_dir

        key = metric_key(self.metric, row, self.evaluator)
        value = float(row[key])
        if state.best_metric is not None and value <= state.best_metric:
            logger.info(
                "%s %.4f at step %d; the best stays %.4f (step %s)",
                key,
                value,
                state.step,
                state.best_metric,
                state.best_step,
            )
            return False
        state.best_metric, state.best_step, state.best_key = value, state.step, key
        if is_main:
            with atomic_dir(self.folder) as tmp:
                encoder.save_to(tmp)
        logger.info("%s %.4f at step %d: the best so far, kept in %s", key, value, state.step, self.folder)
        return True

    def restore(self, state: TrainState, encoder: SentenceEncoder) -> None:
        """Load the best weights into ``encoder`` (nothing to do when the last step was the best)."""
        if state.best_step is None or state.best_step == state.step:
            return
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"keep_best: the best weights (step {state.best_step}) are not in {self.folder}"
            )
        best = SentenceEncoder.load(self.folder, device="cpu")
        encoder.load_state_dict(best.state_dict())
        logger.info(
            "the saved model is step %d's (%s %.4f), not the last step %d's",
            state.best_step,
            state.best_key,
            state.best_metric,
            state.step,
        )
