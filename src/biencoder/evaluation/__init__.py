"""Evaluation: metrics as pure numpy functions, and evaluators that take any Encoder."""

from biencoder.evaluation.base import Evaluator

__all__ = ["Evaluator"]
