"""``biencoder merge``: weights of B and its base A interpolated (WiSE-FT): alpha * B + (1 - alpha) * A.

Several ``--model`` (fine-tunes of the same base, one recipe with several seeds) are averaged
first, uniformly (a model soup); with ``--base`` the soup is then interpolated with A like one
model, and without it the soup is the result. ``--alpha auto`` chooses alpha on the mean of the
dev sets' primary metrics: a BEIR folder (judged by ``--eval-split``) or an STS .csv/.tsv file
each, weighted by ``--eval-weights``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biencoder.evaluation.base import Evaluator

logger = logging.getLogger(__name__)

STS_SUFFIXES = (".csv", ".tsv")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "merge",
        help="merge a fine-tuned model with its base (weight interpolation), or average several (a soup)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--base", help="model A: the base (alpha 0); leave out for a plain soup of several --model"
    )
    p.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        help="model B: the fine-tuned model (alpha 1); give it several times to average fine-tunes "
        "of the same base first (a uniform model soup)",
    )
    p.add_argument(
        "--alpha",
        help="with --base: weight of B (or of the soup) in [0, 1], or 'auto' to choose it on --eval-data",
    )
    p.add_argument("--output", "-o", required=True, help="folder for the merged model")
    p.add_argument(
        "--eval-data",
        action="append",
        help="alpha auto: a dev set, a BEIR folder (judged by --eval-split) or an STS .csv/.tsv file; "
        "give it several times to choose alpha on the mean of their primary metrics",
    )
    p.add_argument("--eval-split", default="dev", help="split of the BEIR --eval-data (default: dev)")
    p.add_argument(
        "--eval-weights",
        help="alpha auto: comma-separated weights of the --eval-data sets, in order (default: equal)",
    )
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

    alpha = _alpha(args)
    auto = args.base is not None and alpha is None
    if args.eval_weights and not args.eval_data:
        raise ValueError("--eval-weights weighs the --eval-data sets, and none was given")
    if args.eval_data and not auto:
        logger.warning("--eval-data is only used with --alpha auto; ignored")
    eval_weights = _numbers(args.eval_weights, "--eval-weights") if args.eval_weights and auto else None
    if eval_weights is not None and len(eval_weights) != len(args.eval_data):
        raise ValueError(
            f"--eval-weights {args.eval_weights!r} gives {len(eval_weights)} weights "
            f"for {len(args.eval_data)} --eval-data sets; give one per set"
        )
    grid = _numbers(args.grid, "--grid") if args.grid else ALPHA_GRID
    if any(not 0.0 <= a <= 1.0 for a in grid):
        raise ValueError(f"--grid {args.grid!r}: every alpha must lie in [0, 1]")
    evaluators = [_evaluator(Path(p), args.eval_split) for p in args.eval_data] if auto else None
    result = merge(
        args.base,
        args.model,
        alpha,
        args.output,
        evaluators,
        grid,
        backend=args.eval_backend,
        eval_weights=eval_weights,
    )
    what = f"alpha {result.alpha:g}" if args.base is not None else f"soup of {len(args.model)} models"
    print(f"{what}: {args.output}")
    return 0


def _alpha(args: argparse.Namespace) -> float | None:
    """--alpha as a number, or None for 'auto' (with --base) and for a plain soup (without)."""
    if args.base is None:
        if args.alpha is not None:
            raise ValueError(
                f"--alpha {args.alpha} weighs the model against --base, and no --base was given; "
                "leave --alpha out to average several --model (a soup), or give --base"
            )
        if len(args.model) == 1:
            raise ValueError(
                f"one --model ({args.model[0]}) and no --base: nothing to merge; give --base "
                "(interpolation with the base) or several --model (a soup)"
            )
        return None
    if args.alpha is None:
        raise ValueError("--base needs --alpha: a number in [0, 1], or 'auto' to choose it on --eval-data")
    if args.alpha == "auto":
        if not args.eval_data:
            raise ValueError(
                "--alpha auto needs --eval-data (a BEIR folder with a dev split, or an STS file)"
            )
        return None
    try:
        alpha = float(args.alpha)
    except ValueError:
        raise ValueError(f"--alpha must be a number in [0, 1] or 'auto', got {args.alpha!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be a number in [0, 1] or 'auto', got {args.alpha!r}")
    return alpha


def _numbers(text: str, flag: str) -> tuple[float, ...]:
    """A comma-separated list of numbers; an error names the flag and the bad item."""
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"{flag}: {item.strip()!r} is not a number (in {text!r})") from None
    return tuple(values)


def _evaluator(path: Path, split: str) -> Evaluator:
    """A dev set as an evaluator: a BEIR folder judged by ``split``, or an STS file."""
    if path.is_dir():
        from biencoder.evaluation.retrieval import RetrievalEvaluator

        return RetrievalEvaluator.from_beir(path, split, name=f"{path.name}-{split}")
    if path.is_file() and path.suffix.lower() in STS_SUFFIXES:
        from biencoder.evaluation.sts import StsEvaluator

        return StsEvaluator.from_file(path, name=path.stem)
    if path.is_file():
        raise ValueError(f"--eval-data {path}: an STS file must end in .csv or .tsv; a BEIR set is a folder")
    raise FileNotFoundError(
        f"--eval-data {path} not found: give a BEIR folder (with qrels/{split}.tsv) "
        "or an STS file (.csv / .tsv)"
    )
