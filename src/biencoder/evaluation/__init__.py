"""Evaluation: metrics as pure numpy functions, and evaluators that take any Encoder."""

from biencoder.evaluation.base import Evaluator
from biencoder.evaluation.classification import ClassificationEvaluator
from biencoder.evaluation.clustering import ClusteringEvaluator
from biencoder.evaluation.mining import ParaphraseMiningEvaluator
from biencoder.evaluation.retrieval import RetrievalEvaluator
from biencoder.evaluation.sts import StsEvaluator
from biencoder.evaluation.suite import evaluate_all
from biencoder.evaluation.tasks import TASKS, TaskOptions, build_tasks

__all__ = [
    "TASKS",
    "ClassificationEvaluator",
    "ClusteringEvaluator",
    "Evaluator",
    "ParaphraseMiningEvaluator",
    "RetrievalEvaluator",
    "StsEvaluator",
    "TaskOptions",
    "build_tasks",
    "evaluate_all",
]
