"""``biencoder merge``: weights of B and its base A interpolated (WiSE-FT): alpha * B + (1 - alpha) * A."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "merge", help="merge a fine-tuned model with its base (weight interpolation)", description=__doc__
    )
    p.add_argument("--base", required=True, help="model A: the base (alpha 0)")
    p.add_argument("--model", "-m", required=True, help="model B: the fine-tuned model (alpha 1)")
    p.add_argument(
        "--alpha", required=True, help="weight of B in [0, 1], or 'auto' to choose it on --eval-data"
    )
    p.add_argument("--output", "-o", required=True, help="folder for the merged model")
    p.add_argument("--eval-data", help="alpha auto: a BEIR folder whose --eval-split judges the choice")
    p.add_argument("--eval-split", default="dev", help="split of --eval-data (default: dev)")
    p.add_argument("--grid", help="alpha auto: comma-separated alphas (default 0, 0.1, ..., 1)")
    p.add_argument(
        "--eval-backend",
        choices=["torch", "onnx"],
        default="torch",
        help="alpha auto: score each merge with torch, or through an fp32 ONNX export (~2x faster on CPU)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.training.merge import ALPHA_GRID, merge

    alpha: float | None
    if args.alpha == "auto":
        alpha = None
        if not args.eval_data:
            raise ValueError("--alpha auto needs --eval-data (a BEIR folder with a dev split)")
    else:
        try:
            alpha = float(args.alpha)
        except ValueError:
            raise ValueError(f"--alpha must be a number in [0, 1] or 'auto', got {args.alpha!r}") from None
    evaluator = None
    if args.eval_data:
        from biencoder.evaluation.retrieval import RetrievalEvaluator

        evaluator = RetrievalEvaluator.from_beir(args.eval_data, args.eval_split)
    grid = tuple(float(x) for x in args.grid.split(",")) if args.grid else ALPHA_GRID
    result = merge(args.base, args.model, alpha, args.output, evaluator, grid, backend=args.eval_backend)
    print(f"alpha {result.alpha:g}: {args.output}")
    return 0
