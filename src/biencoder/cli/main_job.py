"""``biencoder main``: fine-tune all-MiniLM-L6-v2 on SciFact with the model card's recipe and
show it against the base model; ``--arms card,improved`` adds the improved recipe.

Steps: evaluate the base model on SciFact test, TREC DL19 (mini) and STSb test (cached between
runs, keyed by the model's and the data's contents); the card arm fine-tunes on SciFact's train
pairs with the model card's recipe (evaluated at the end of training, so its card carries the
results) into ``model/``; the improved arm is the card's recipe with the setting chosen by
cross-validation on SciFact train (``biencoder cv``; see docs/training.md), refit on every train
query, into ``improved/model/``, evaluated by the same evaluators; report.md, report.json and
report.png put the models side by side, with a paired per-query comparison of the two recipes
on SciFact test when both ran. The improved arm is not run by default: no setting beat the card's
recipe in cross-validation (paired p < 0.05 over the 809 train queries), nor by +0.010 on SciFact
test over 3 seeds (docs/training.md).

Beside dense retrieval, BM25 alone (once: it needs no model) and hybrid search are scored on
SciFact test and DL19-mini from the same corpus embeddings (``evaluate_modes``). SciFact's
hybrid weight is the base model's pick by 5-fold cross-validation on SciFact *train* queries
(min-max normalisation); the fine-tuned models saw every train query, so tuning on them would
overrate the dense side, and they reuse the base model's pick. DL19-mini has no train queries:
its hybrid row uses search's untuned default.
"""

# Named main_job.py, not main.py: a submodule called main would shadow the function biencoder.cli.main.
# The job itself lives in biencoder.main_job; this module parses its arguments.
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from biencoder.main_job.settings import ARMS, DEFAULT_ARMS, MainJobSettings
from biencoder.resolve import BASE_MODEL


def register(sub: Any) -> None:
    p = sub.add_parser(
        "main",
        help="fine-tune on SciFact with the card's recipe (and an improved one), evaluate against the base",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default="../shared/data", help="the data folder (default: %(default)s)")
    p.add_argument(
        "--output", "-o", default="runs/main", help="where the model and the report go (default: %(default)s)"
    )
    p.add_argument("--model", default=BASE_MODEL, help="the base model (default: %(default)s)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=-1,
        help="stop training after n steps (quick checks; default: the recipe's 3 epochs)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="evaluate on n queries/pairs per task only (quick checks)"
    )
    p.add_argument(
        "--max-seq-length", type=int, default=None, help="training max_seq_length (default: the recipe's 256)"
    )
    p.add_argument(
        "--arms",
        default=",".join(DEFAULT_ARMS),
        help="comma-separated recipes to run: card (the model card's), improved (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=42, help="training seed of both arms (default: %(default)s)")
    p.add_argument(
        "--eval-backend",
        choices=["onnx", "torch"],
        default="onnx",
        help="runtime of every evaluation: onnx (fp32, equal to torch to 1e-5 and ~2x faster on CPU) "
        "or torch (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument("--no-cache", action="store_true", help="re-evaluate the base model even when cached")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.main_job.run import run_main_job  # numpy and the evaluators: not for --help

    settings = settings_from(args)
    run_main_job(settings)
    print((settings.output / "report.md").read_text(encoding="utf-8"), end="")
    return 0


def settings_from(args: argparse.Namespace) -> MainJobSettings:
    """The job's settings from the parsed arguments; a bad --max-steps or --arms is named as given."""
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(
            f"--max-steps must be positive (or -1 for the recipe's epochs), got {args.max_steps}"
        )
    arms = tuple(a.strip() for a in str(args.arms).split(",") if a.strip())
    if not arms or any(a not in ARMS for a in arms):
        raise ValueError(f"--arms takes a comma-separated subset of {', '.join(ARMS)}, got {args.arms!r}")
    return MainJobSettings(
        data=Path(args.data),
        output=Path(args.output),
        model=str(args.model),
        max_steps=args.max_steps,
        limit=args.limit,
        max_seq_length=args.max_seq_length,
        arms=arms,
        seed=args.seed,
        eval_backend=args.eval_backend,
        batch_size=args.batch_size,
        use_cache=not args.no_cache,
        device=args.device,
    )
