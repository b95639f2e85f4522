"""``biencoder main``: fine-tune all-MiniLM-L6-v2 with the card's recipe on SciFact, then show the gain.

Steps: evaluate the base model on SciFact test, TREC DL19 (mini) and STSb test (cached between
runs, keyed by the model's and the data's contents); fine-tune on SciFact's train pairs with
the model card's recipe (the fine-tuned model is evaluated at the end of training, so its card
carries the results); write report.md, report.json and report.png beside the model.
"""

# Named main_job.py, not main.py: a submodule called main would shadow the function biencoder.cli.main.
from __future__ import annotations

import argparse
import logging
import shlex
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TASK_NAMES = ("scifact", "trec-dl19", "stsb")
# What sentence-transformers' trainer reaches with the same recipe here (issue 4), and the targets.
REFERENCE = {"scifact": {"ndcg@10": 0.7000}, "stsb": {"spearman": 0.8151}}
TARGETS = {"scifact": {"ndcg@10": 0.695}, "stsb": {"spearman": 0.810}}
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
    started = time.perf_counter()
    show = None if logger.isEnabledFor(logging.INFO) else False

    from biencoder.encoder import SentenceEncoder
    from biencoder.evaluation.suite import cached_results, evaluate_all, fingerprint
    from biencoder.evaluation.tasks import TASKS, TaskOptions, build_tasks
    from biencoder.resolve import resolve_model_path

    options = TaskOptions(limit=args.limit, batch_size=args.batch_size, show_progress=show)
    evaluators = build_tasks(TASK_NAMES, data, options)
    seconds: dict[str, float] = {}

    # 1. The base model, cached: the key covers the model's files, the data files and the settings.
    base_path = resolve_model_path(args.model)
    key = fingerprint(
        [base_path, *(data / TASKS[t].path for t in TASK_NAMES)],
        {"tasks": TASK_NAMES, "limit": args.limit, "version": _version()},
    )
    logger.info("[1/3] base model %s", args.model)
    t0 = time.perf_counter()
    base, from_cache = cached_results(
        output / "cache" / f"base-{key}.json",
        lambda: evaluate_all(SentenceEncoder.load(base_path, device=args.device), evaluators, "base"),
        use_cache=not args.no_cache,
    )
    seconds["base evaluation" + (" (cached)" if from_cache else "")] = time.perf_counter() - t0

    # 2. Fine-tune with the card's recipe; the trainer evaluates the final model with the same evaluators.
    from biencoder.training import TrainConfig, train

    logger.info("[2/3] fine-tuning on %s (the card's recipe)", data / "scifact")
    config = TrainConfig(
        data=(str(data / "scifact"),),
        output_dir=str(output / "model"),
        base_model=str(args.model),
        max_steps=args.max_steps,
        **({"max_seq_length": args.max_seq_length} if args.max_seq_length else {}),
        device=args.device,
    )
    t0 = time.perf_counter()
    result = train(config, evaluators=evaluators, show_progress=show)
    seconds["fine-tuning and its final evaluation"] = time.perf_counter() - t0
    tuned = _from_history(result.eval_history, evaluators)
    if tuned is None:  # a trainer that did not evaluate: do it here
        t0 = time.perf_counter()
        tuned = evaluate_all(
            SentenceEncoder.load(result.output_dir, device=args.device), evaluators, "fine-tuned"
        )
        seconds["fine-tuned evaluation"] = time.perf_counter() - t0

    # 3. The report.
    logger.info("[3/3] writing the report")
    seconds["total"] = time.perf_counter() - started
    paths = write_main_report(output, base, tuned, args, result, seconds)
    logger.info("report: %s", ", ".join(str(p) for p in paths))
    print((output / "report.md").read_text(encoding="utf-8"), end="")
    return 0


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


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run."""
    from biencoder.resolve import BASE_MODEL

    parts = ["--data", str(args.data), "--output", str(args.output)]
    if str(args.model) != BASE_MODEL:
        parts += ["--model", str(args.model)]
    for flag, value in (
        ("--max-steps", args.max_steps if args.max_steps > 0 else None),
        ("--limit", args.limit),
        ("--max-seq-length", args.max_seq_length),
    ):
        if value is not None:
            parts += [flag, str(value)]
    return "biencoder main " + shlex.join(parts)


def _targets(tuned: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for task, metrics in TARGETS.items():
        for metric, target in metrics.items():
            value = tuned.get(task, {}).get(metric)
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "target": target,
                    "value": value,
                    "reached": value is not None and value >= target,
                    "sentence_transformers": REFERENCE[task][metric],
                }
            )
    return rows


def _markdown(
    results: dict[str, Any],
    shown: dict[str, list[str]],
    targets: list[dict[str, Any]],
    args: argparse.Namespace,
    result: Any,
    seconds: dict[str, float],
    quick: bool,
) -> str:
    from biencoder.evaluation.report import markdown_table

    lines = [
        "# Fine-tuning all-MiniLM-L6-v2 on SciFact: base vs fine-tuned",
        "",
        f"- base model: `{args.model}`; fine-tuned model: `{result.output_dir}` "
        f"({result.global_step} steps, {result.seconds / 60:.1f} min of training)",
        "- training: SciFact train pairs with the model card's recipe (MultipleNegativesRankingLoss, "
        "batch 64, 3 epochs, lr 5e-5)"
        + (f", stopped at --max-steps {args.max_steps}" if args.max_steps > 0 else ""),
        "- evaluation: SciFact test (BEIR), TREC DL19 passages on the mini corpus (relevant = grade >= 2; "
        "nDCG graded), STS Benchmark test",
        f"- reproduce: `{_command(args)}`",
    ]
    if quick:
        lines.append("- **quick run** (--limit / --max-steps): not comparable with published numbers")
    lines += [
        "",
        markdown_table(results, shown),
        "## Targets (issue 4)",
        "",
        "| task | metric | target | fine-tuned | sentence-transformers | reached |",
        "|---|---|---:|---:|---:|---|",
    ]
    for t in targets:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        lines.append(
            f"| {t['task']} | {t['metric']} | {t['target']:.3f} | {value} | "
            f"{t['sentence_transformers']:.4f} | {'yes' if t['reached'] else 'no'} |"
        )
    lines += [
        "",
        "## Time",
        "",
        *(f"- {name}: {s / 60:.1f} min" for name, s in seconds.items()),
        "",
        "![base vs fine-tuned](report.png)",
        "",
    ]
    return "\n".join(lines)


def write_main_report(
    output: Path,
    base: dict[str, dict[str, float]],
    tuned: dict[str, dict[str, float]],
    args: argparse.Namespace,
    result: Any,
    seconds: dict[str, float],
) -> list[Path]:
    """report.md, report.json and report.png in ``output``, each written atomically."""
    from biencoder.atomic import atomic_file
    from biencoder.evaluation.report import plot_comparison, write_json
    from biencoder.evaluation.tasks import TASKS

    results = {"base": base, "fine-tuned": tuned}
    shown = {t: list(TASKS[t].shown) for t in TASK_NAMES}
    quick = args.limit is not None or args.max_steps > 0
    targets = _targets(tuned)
    md = output / "report.md"
    with atomic_file(md) as tmp:
        tmp.write_text(_markdown(results, shown, targets, args, result, seconds, quick), encoding="utf-8")
    payload = {
        "base_model": str(args.model),
        "fine_tuned_model": str(result.output_dir),
        "results": results,
        "targets": targets,
        "quick_run": quick,
        "train_steps": result.global_step,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "command": _command(args),
    }
    js = write_json(output / "report.json", payload)
    png = plot_comparison(
        output / "report.png",
        results,
        {t: s[:2] for t, s in shown.items()},
        title="all-MiniLM-L6-v2: base vs fine-tuned on SciFact",
    )
    return [md, js, png]
