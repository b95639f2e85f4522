"""The evaluator contract: the trainer, the CLI and the main job call evaluators through it alone."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from biencoder.protocol import Encoder


@runtime_checkable
class Evaluator(Protocol):
    """Scores an encoder on one dataset. Metric names are plain (``ndcg@10``, ``spearman``)."""

    @property
    def name(self) -> str:
        """Short dataset/task name, e.g. ``scifact`` or ``sts-test``; prefixes metrics in logs."""
        ...

    @property
    def primary_metric(self) -> str:
        """The metric a table or a chart leads with, e.g. ``ndcg@10``."""
        ...

    def __call__(self, encoder: Encoder) -> dict[str, float]: ...
