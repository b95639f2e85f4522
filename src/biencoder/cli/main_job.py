"""``biencoder main``: fine-tune all-MiniLM-L6-v2 on SciFact with the card's recipe and with an
improved recipe on the same data, then show both against the base model.

Steps: evaluate the base model on SciFact test, TREC DL19 (mini) and STSb test (cached between
runs, keyed by the model's and the data's contents); the card arm fine-tunes on SciFact's train
pairs with the model card's recipe (evaluated at the end of training, so its card carries the
results) into ``model/``; the improved arm (``biencoder.training.recipe``: a dev split by query,
mined hard negatives, no-duplicate batches, the best dev epoch, a merge with the base whose
alpha is chosen on dev) goes to ``improved/model/`` and is evaluated by the same evaluators;
report.md, report.json and report.png put the three side by side, with a paired per-query
comparison of the two recipes on SciFact test.
"""

# Named main_job.py, not main.py: a submodule called main would shadow the function biencoder.cli.main.
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TASK_NAMES = ("scifact", "trec-dl19", "stsb")
ARMS = ("card", "improved")
MISSING_DATA = (
    "data folder {data} not found. The main job fine-tunes on SciFact's train split and evaluates on "
    "SciFact test, TREC DL19 (mini) and STS Benchmark test, read from scifact/, trec-dl19-mini/ and "
    "stsb/ in that folder (the layout of ../shared/data; see its README.md). Put the data there, "
    "or pass its location with --data DIR."
)


def register(sub: Any) -> None:
    from biencoder.resolve import BASE_MODEL

    p = sub.add_parser(
        "main",
        help="fine-tune on SciFact with the card's recipe, evaluate base vs fine-tuned",
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
        default="card,improved",
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


def check_data(data: Path) -> None:
    if not data.is_dir():
        raise FileNotFoundError(MISSING_DATA.format(data=data))
    needed = [
        "scifact/corpus.jsonl",
        "scifact/queries.jsonl",
        "scifact/qrels/train.tsv",
        "scifact/qrels/test.tsv",
        "trec-dl19-mini/corpus.jsonl",
        "trec-dl19-mini/qrels/test.tsv",
        "stsb/sts-test.csv",
    ]
    missing = [name for name in needed if not (data / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{data} lacks {', '.join(missing)}. " + MISSING_DATA.format(data=data))


def run(args: argparse.Namespace) -> int:
    data, output = Path(args.data), Path(args.output)
    check_data(data)
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(
            f"--max-steps must be positive (or -1 for the recipe's epochs), got {args.max_steps}"
        )
    arms = [a.strip() for a in str(args.arms).split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        raise ValueError(f"--arms takes a comma-separated subset of {', '.join(ARMS)}, got {args.arms!r}")
    started = time.perf_counter()
    show = None if logger.isEnabledFor(logging.INFO) else False

    from biencoder.evaluation.suite import cached_results, evaluate_all, fingerprint
    from biencoder.evaluation.tasks import TASKS, TaskOptions, build_tasks
    from biencoder.resolve import resolve_model_path

    options = TaskOptions(limit=args.limit, batch_size=args.batch_size, show_progress=show)
    evaluators = build_tasks(TASK_NAMES, data, options)
    seconds: dict[str, float] = {}
    steps = 1 + len(arms) + 1

    # 1. The base model, cached: the key covers the model's files, the data files and the settings.
    base_path = resolve_model_path(args.model)
    key = fingerprint(
        [base_path, *(data / TASKS[t].path for t in TASK_NAMES)],
        {"tasks": TASK_NAMES, "limit": args.limit, "version": _version(), "backend": args.eval_backend},
    )
    logger.info("[1/%d] base model %s", steps, args.model)
    loaded: list[Any] = []

    def base_encoder() -> Any:  # one base model for evaluation and mining: the corpus is embedded once
        from biencoder.memo import MemoEncoder

        loaded.append(MemoEncoder(_load(base_path, args)))
        return loaded[0]

    t0 = time.perf_counter()
    base, from_cache = cached_results(
        output / "cache" / f"base-{key}.json",
        lambda: evaluate_all(base_encoder(), evaluators, "base"),
        use_cache=not args.no_cache,
    )
    seconds["base evaluation" + (" (cached)" if from_cache else "")] = time.perf_counter() - t0
    arm_results: dict[str, Any] = {}
    per_query: dict[str, dict[str, float]] = {}
    scifact = evaluators[TASK_NAMES.index("scifact")]

    # 2. The card's recipe; the trainer evaluates the final model with the same evaluators.
    if "card" in arms:
        from biencoder.training import TrainConfig, train

        logger.info("[2/%d] fine-tuning on %s (the card's recipe)", steps, data / "scifact")
        config = TrainConfig(
            data=(str(data / "scifact"),),
            output_dir=str(output / "model"),
            base_model=str(args.model),
            max_steps=args.max_steps,
            seed=args.seed,
            **({"max_seq_length": args.max_seq_length} if args.max_seq_length else {}),
            eval_backend=args.eval_backend,
            device=args.device,
        )
        t0 = time.perf_counter()
        result = train(config, evaluators=evaluators, show_progress=show)
        tuned = _from_history(result.eval_history, evaluators)
        if tuned is None:  # a trainer that did not evaluate: do it here
            tuned = evaluate_all(_load(result.output_dir, args), evaluators, "card recipe")
        per_query["card recipe"] = _ndcg_per_query(scifact)
        seconds["card recipe: fine-tuning and evaluation"] = time.perf_counter() - t0
        arm_results["card recipe"] = {"results": tuned, "train": result}

    # 3. The improved recipe on the same data, evaluated by the same evaluators.
    if "improved" in arms:
        from biencoder.training.recipe import ImprovedRecipe, run_recipe

        logger.info("[%d/%d] the improved recipe on %s", steps - 1, steps, data / "scifact")
        recipe = ImprovedRecipe(eval_backend=args.eval_backend)
        t0 = time.perf_counter()
        improved = run_recipe(
            recipe,
            data / "scifact",
            output / "improved",
            base_model=str(args.model),
            seed=args.seed,
            max_steps=args.max_steps,
            max_seq_length=args.max_seq_length or 256,
            device=args.device,
            show_progress=show,
            base_encoder=loaded[0] if loaded and recipe.mining_backend == args.eval_backend else None,
        )
        results = evaluate_all(_load(improved.model_dir, args), evaluators, "improved recipe")
        per_query["improved recipe"] = _ndcg_per_query(scifact)
        seconds["improved recipe: all steps and evaluation"] = time.perf_counter() - t0
        for step, value in improved.seconds.items():
            seconds[f"  improved: {step}"] = value
        arm_results["improved recipe"] = {"results": results, "recipe": recipe, "run": improved}
        _record_results(improved.model_dir / "README.md", results)

    # 4. The report.
    from biencoder.cli._main_report import write_main_report

    logger.info("[%d/%d] writing the report", steps, steps)
    seconds["total"] = time.perf_counter() - started
    paths = write_main_report(output, base, arm_results, per_query, args, seconds)
    logger.info("report: %s", ", ".join(str(p) for p in paths))
    print((output / "report.md").read_text(encoding="utf-8"), end="")
    return 0


def _load(folder: Path, args: argparse.Namespace) -> Any:
    """A saved model in the evaluation runtime (an ONNX graph is exported into the folder once)."""
    from biencoder.loading import load_encoder

    return load_encoder(folder, args.eval_backend, device=args.device)


def _ndcg_per_query(evaluator: Any) -> dict[str, float]:
    return {q: m["ndcg@10"] for q, m in getattr(evaluator, "last_per_query", {}).items()}


def _record_results(card: Path, results: dict[str, dict[str, float]]) -> None:
    """The final (test) evaluation of the improved model, appended to its card."""
    from biencoder.atomic import atomic_file

    lines = ["", "## Evaluation of the merged model (read once, after every choice was made on dev)", ""]
    lines += ["| task | metric | value |", "|---|---|---:|"]
    lines += [
        f"| {task} | {name} | {value:.4f} |" for task, ms in results.items() for name, value in ms.items()
    ]
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    with atomic_file(card) as tmp:
        tmp.write_text(text.rstrip() + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _version() -> str:
    from biencoder import __version__

    return __version__


def _from_history(
    history: list[dict[str, float]], evaluators: list[Any]
) -> dict[str, dict[str, float]] | None:
    if not history:
        return None
    final = history[-1]
    out = {
        e.name: {k.removeprefix(f"{e.name}_"): v for k, v in final.items() if k.startswith(f"{e.name}_")}
        for e in evaluators
    }
    return out if all(out.values()) else None
