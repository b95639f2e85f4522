"""The main job's steps: the base model (its results cached between runs), the card's recipe, the
improved recipe, each evaluated by the same evaluators, then the report.

1. The base model on SciFact test, TREC DL19 (mini) and STSb test, cached under
   ``output/cache`` (keyed by the model's and the data's contents and the settings), with BM25 and
   hybrid rows and SciFact's cross-validated hybrid alpha (``hybrid``).
2. The card arm: SciFact's train pairs with the model card's recipe into ``output/model``,
   evaluated by the trainer at the end of training (so its card carries the results).
3. The improved arm (``biencoder.training.recipe``) into ``output/improved/model``.
4. report.md, report.json and report.png (``report``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from biencoder import __version__
from biencoder.atomic import atomic_file
from biencoder.evaluation.base import Evaluator
from biencoder.evaluation.report import read_json, write_json
from biencoder.evaluation.suite import TaskResults, cached_results, evaluate_all, fingerprint
from biencoder.evaluation.tasks import TASKS, TaskOptions, build_tasks
from biencoder.loading import load_encoder
from biencoder.main_job.hybrid import FusionRecords, fusion_choices, merge_hybrid, with_hybrid
from biencoder.main_job.report import write_report
from biencoder.main_job.settings import FUSION_CV, TASK_NAMES, MainJobSettings, check_data
from biencoder.memo import MemoEncoder
from biencoder.protocol import Encoder
from biencoder.resolve import resolve_model_path

logger = logging.getLogger(__name__)


def run_main_job(settings: MainJobSettings) -> list[Path]:
    """Run the main job; returns the report's files (report.md, report.json, report.png)."""
    check_data(settings.data)
    started = time.perf_counter()
    show = None if logger.isEnabledFor(logging.INFO) else False
    options = TaskOptions(limit=settings.limit, batch_size=settings.batch_size, show_progress=show)
    evaluators = build_tasks(TASK_NAMES, settings.data, options)
    seconds: dict[str, float] = {}
    steps = 1 + len(settings.arms) + 1

    base, fusion, base_encoder = _base_results(settings, evaluators, options, seconds, steps)
    scifact = evaluators[TASK_NAMES.index("scifact")]
    evaluators = with_hybrid(evaluators, fusion, lexical=False)  # the arms: dense and hybrid
    arms: dict[str, dict[str, Any]] = {}
    per_query: dict[str, dict[str, float]] = {}
    if "card" in settings.arms:
        arms["card recipe"] = _card_arm(settings, evaluators, options, seconds, steps)
        per_query["card recipe"] = _ndcg_per_query(scifact)
    if "improved" in settings.arms:
        arms["improved recipe"] = _improved_arm(settings, evaluators, options, seconds, steps, base_encoder)
        per_query["improved recipe"] = _ndcg_per_query(scifact)

    logger.info("[%d/%d] writing the report", steps, steps)
    seconds["total"] = time.perf_counter() - started
    paths = write_report(settings, base, arms, per_query, seconds, fusion)
    logger.info("report: %s", ", ".join(str(p) for p in paths))
    return paths


def _base_results(
    settings: MainJobSettings,
    evaluators: list[Evaluator],
    options: TaskOptions,
    seconds: dict[str, float],
    steps: int,
) -> tuple[TaskResults, FusionRecords, Encoder | None]:
    """The base model's results, each hybrid task's fusion settings, and the base model when it
    was loaded (not cached): the improved arm mines with it, without embedding the corpus again.
    The cache key covers the model's files, the data files and the settings."""
    base_path = resolve_model_path(settings.model)
    key = fingerprint(
        [base_path, *(settings.data / TASKS[t].path for t in TASK_NAMES)],
        {
            "tasks": TASK_NAMES,
            "limit": settings.limit,
            "version": __version__,
            "backend": settings.eval_backend,
            "fusion_cv": FUSION_CV,
        },
    )
    logger.info("[1/%d] base model %s", steps, settings.model)
    loaded: list[Encoder] = []
    fusion_file = settings.output / "cache" / f"base-fusion-{key}.json"
    fusion: FusionRecords = {}

    def evaluate_base() -> TaskResults:
        loaded.append(MemoEncoder(_load(base_path, settings)))  # one base model for evaluation and mining
        fusion.update(fusion_choices(loaded[0], settings.data, settings.limit, options))
        write_json(fusion_file, fusion)
        wrapped = with_hybrid(evaluators, fusion, lexical=True)
        return merge_hybrid(evaluate_all(loaded[0], wrapped, "base"), wrapped)

    t0 = time.perf_counter()
    base, from_cache = cached_results(
        settings.output / "cache" / f"base-{key}.json",
        evaluate_base,
        use_cache=settings.use_cache and fusion_file.is_file(),
    )
    if from_cache:
        fusion.update(read_json(fusion_file))
    seconds["base evaluation" + (" (cached)" if from_cache else "")] = time.perf_counter() - t0
    return base, fusion, loaded[0] if loaded else None


def _card_arm(
    settings: MainJobSettings,
    evaluators: list[Evaluator],
    options: TaskOptions,
    seconds: dict[str, float],
    steps: int,
) -> dict[str, Any]:
    """The card's recipe; the trainer evaluates the final model with the same evaluators."""
    from biencoder.training import TrainConfig, train  # torch: imported only when an arm trains

    logger.info("[2/%d] fine-tuning on %s (the card's recipe)", steps, settings.data / "scifact")
    length: dict[str, Any] = {"max_seq_length": settings.max_seq_length} if settings.max_seq_length else {}
    config = TrainConfig(
        data=(str(settings.data / "scifact"),),
        output_dir=str(settings.output / "model"),
        base_model=str(settings.model),
        max_steps=settings.max_steps,
        seed=settings.seed,
        **length,  # None: the recipe's
        eval_backend=settings.eval_backend,
        device=settings.device,
    )
    t0 = time.perf_counter()
    result = train(config, evaluators=evaluators, show_progress=options.show_progress)
    tuned = _from_history(result.eval_history, evaluators)
    if tuned is None:  # a trainer that did not evaluate: do it here
        tuned = evaluate_all(_load(result.output_dir, settings), evaluators, "card recipe")
    tuned = merge_hybrid(tuned, evaluators)
    seconds["card recipe: fine-tuning and evaluation"] = time.perf_counter() - t0
    return {"results": tuned, "train": result}


def _improved_arm(
    settings: MainJobSettings,
    evaluators: list[Evaluator],
    options: TaskOptions,
    seconds: dict[str, float],
    steps: int,
    base_encoder: Encoder | None,
) -> dict[str, Any]:
    """The improved recipe on the same data, evaluated by the same evaluators."""
    from biencoder.training.recipe import ImprovedRecipe, run_recipe  # torch: only when an arm trains

    logger.info("[%d/%d] the improved recipe on %s", steps - 1, steps, settings.data / "scifact")
    recipe = ImprovedRecipe(eval_backend=settings.eval_backend)
    t0 = time.perf_counter()
    improved = run_recipe(
        recipe,
        settings.data / "scifact",
        settings.output / "improved",
        base_model=str(settings.model),
        seed=settings.seed,
        max_steps=settings.max_steps,
        max_seq_length=settings.max_seq_length or 256,
        device=settings.device,
        show_progress=options.show_progress,
        base_encoder=base_encoder if recipe.mining_backend == settings.eval_backend else None,
    )
    results = evaluate_all(_load(improved.model_dir, settings), evaluators, "improved recipe")
    results = merge_hybrid(results, evaluators)
    seconds["improved recipe: all steps and evaluation"] = time.perf_counter() - t0
    for step, value in improved.seconds.items():
        seconds[f"  improved: {step}"] = value
    _record_results(improved.model_dir / "README.md", results)
    return {"results": results, "recipe": recipe, "run": improved}


def _load(folder: Path, settings: MainJobSettings) -> Encoder:
    """A saved model in the evaluation runtime (an ONNX graph is exported into the folder once)."""
    return load_encoder(folder, settings.eval_backend, device=settings.device)


def _ndcg_per_query(evaluator: Evaluator) -> dict[str, float]:
    return {q: m["ndcg@10"] for q, m in getattr(evaluator, "last_per_query", {}).items()}


def _record_results(card: Path, results: TaskResults) -> None:
    """The final (test) evaluation of the improved model, appended to its card."""
    lines = ["", "## Evaluation of the merged model (read once, after every choice was made on dev)", ""]
    lines += ["| task | metric | value |", "|---|---|---:|"]
    lines += [
        f"| {task} | {name} | {value:.4f} |" for task, ms in results.items() for name, value in ms.items()
    ]
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    with atomic_file(card) as tmp:
        tmp.write_text(text.rstrip() + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _from_history(history: list[dict[str, float]], evaluators: list[Evaluator]) -> TaskResults | None:
    """The final evaluation in a training history, by task (None when it lacks one)."""
    if not history:
        return None
    final = history[-1]
    out = {
        e.name: {k.removeprefix(f"{e.name}_"): v for k, v in final.items() if k.startswith(f"{e.name}_")}
        for e in evaluators
    }
    return out if all(out.values()) else None
