"""The main job's steps: the base model (its results cached between runs), the card's recipe, the
improved recipe, each evaluated by the same evaluators, then the report.

1. The base model on SciFact test, TREC DL19 (mini) and STSb test, cached under
   ``output/cache`` (keyed by the model's and the data's contents and the settings), with BM25 and
   hybrid rows, each model's fused as the label-free decision chooses for it (``hybrid``).
2. The card arm: SciFact's train pairs with the model card's recipe into ``output/model``,
   evaluated by the trainer at the end of training (so its card carries the results).
3. The improved arm (``--arms card,improved``): the card's recipe with the best setting of
   ``biencoder cv`` (``settings.IMPROVED``), refit on every train query, into
   ``output/improved/model``.
4. report.md, report.json and report.png (``report``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from biencoder import __version__
from biencoder.atomic import atomic_dir, atomic_file
from biencoder.evaluation.base import Evaluator
from biencoder.evaluation.report import read_json, write_json
from biencoder.evaluation.suite import TaskResults, cached_results, evaluate_all, fingerprint
from biencoder.evaluation.tasks import TASKS, TaskOptions, build_tasks
from biencoder.loading import load_encoder
from biencoder.main_job.hybrid import FusionRecords, fusion_plan, merge_hybrid, record_choices, with_hybrid
from biencoder.main_job.report import write_report
from biencoder.main_job.settings import IMPROVED, TASK_NAMES, MainJobSettings, check_data
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

    base, fusion = _base_results(settings, evaluators, options, seconds, steps)
    scifact = evaluators[TASK_NAMES.index("scifact")]
    evaluators = with_hybrid(evaluators, fusion, lexical=False)  # the arms: dense and hybrid
    arms: dict[str, dict[str, Any]] = {}
    per_query: dict[str, dict[str, float]] = {}
    if "card" in settings.arms:
        arms["card recipe"] = _card_arm(settings, evaluators, options, seconds, steps)
        per_query["card recipe"] = _ndcg_per_query(scifact)
        record_choices(fusion, evaluators, "card recipe")
    if "improved" in settings.arms:
        card = arms.get("card recipe")
        arms["improved recipe"] = _improved_arm(settings, evaluators, options, seconds, steps, card)
        per_query["improved recipe"] = _ndcg_per_query(scifact)
        record_choices(fusion, evaluators, "improved recipe")

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
) -> tuple[TaskResults, FusionRecords]:
    """The base model's results and each hybrid task's fusion settings, cached between runs; the
    cache key covers the model's files, the data files and the settings."""
    base_path = resolve_model_path(settings.model)
    key = fingerprint(
        [base_path, *(settings.data / TASKS[t].path for t in TASK_NAMES)],
        {
            "tasks": TASK_NAMES,
            "limit": settings.limit,
            "version": __version__,
            "backend": settings.eval_backend,
            "fusion": "label-free decision per model",
        },
    )
    logger.info("[1/%d] base model %s", steps, settings.model)
    fusion_file = settings.output / "cache" / f"base-fusion-{key}.json"
    fusion: FusionRecords = fusion_plan()

    def evaluate_base() -> TaskResults:
        encoder = MemoEncoder(_load(base_path, settings))  # each corpus embedded once
        wrapped = with_hybrid(evaluators, fusion, lexical=True)
        results = merge_hybrid(evaluate_all(encoder, wrapped, "base"), wrapped)
        record_choices(fusion, wrapped, "base")
        write_json(fusion_file, fusion)
        return results

    t0 = time.perf_counter()
    base, from_cache = cached_results(
        settings.output / "cache" / f"base-{key}.json",
        evaluate_base,
        use_cache=settings.use_cache and fusion_file.is_file(),
    )
    if from_cache:
        fusion = read_json(fusion_file)
    seconds["base evaluation" + (" (cached)" if from_cache else "")] = time.perf_counter() - t0
    return base, fusion


def _card_arm(
    settings: MainJobSettings,
    evaluators: list[Evaluator],
    options: TaskOptions,
    seconds: dict[str, float],
    steps: int,
) -> dict[str, Any]:
    """The card's recipe; the trainer evaluates the final model with the same evaluators."""
    from biencoder.training import train  # torch: imported only when an arm trains

    logger.info("[2/%d] fine-tuning on %s (the card's recipe)", steps, settings.data / "scifact")
    config = _card_config(settings, settings.output / "model")
    t0 = time.perf_counter()
    result = train(config, evaluators=evaluators, show_progress=options.show_progress)
    tuned = _from_history(result.eval_history, evaluators)
    if tuned is None:  # a trainer that did not evaluate: do it here
        tuned = evaluate_all(_load(result.output_dir, settings), evaluators, "card recipe")
    tuned = merge_hybrid(tuned, evaluators)
    seconds["card recipe: fine-tuning and evaluation"] = time.perf_counter() - t0
    return {"results": tuned, "train": result, "config": config}


def _improved_arm(
    settings: MainJobSettings,
    evaluators: list[Evaluator],
    options: TaskOptions,
    seconds: dict[str, float],
    steps: int,
    card: dict[str, Any] | None,
) -> dict[str, Any]:
    """The card's recipe with the best setting of ``biencoder cv`` on SciFact train (``IMPROVED``),
    refit on every train query and evaluated by the same evaluators. A setting that trains as the
    card's takes the card arm's fine-tune when that arm ran, rather than training it again."""
    from biencoder.training import train  # torch: imported only when an arm trains

    setting = IMPROVED
    logger.info(
        "[%d/%d] the improved recipe (%s) on %s", steps - 1, steps, setting.name, settings.data / "scifact"
    )
    t0 = time.perf_counter()
    folder = settings.output / "improved" / "model"
    changes = dict(setting.train)
    if settings.max_seq_length:  # a quick check's --max-seq-length holds for both arms
        changes["max_seq_length"] = settings.max_seq_length
    config = _card_config(settings, settings.output / "improved" / "tuned", **changes)
    # a setting that trains as the card's: the card arm's fine-tune
    reused = card is not None and config == dataclasses.replace(card["config"], output_dir=config.output_dir)
    tuned = Path(card["train"].output_dir) if card is not None and reused else None
    train_result = None
    if tuned is None:
        train_result = train(config, show_progress=options.show_progress)
        tuned = train_result.output_dir
    _finish_model(setting, settings.model, tuned, folder)
    results = evaluate_all(_load(folder, settings), evaluators, "improved recipe")
    results = merge_hybrid(results, evaluators)
    seconds[
        "improved recipe: " + ("the card's fine-tune, evaluation" if reused else "fine-tuning and evaluation")
    ] = time.perf_counter() - t0
    _record_results(folder / "README.md", results)
    return {"results": results, "setting": setting, "train": train_result, "path": folder, "reused": reused}


def _card_config(settings: MainJobSettings, output: Path, **changes: Any) -> Any:
    """The card's recipe on SciFact train (the job's seed, steps and length), with ``changes``."""
    from biencoder.training import TrainConfig

    length: dict[str, Any] = {"max_seq_length": settings.max_seq_length} if settings.max_seq_length else {}
    values: dict[str, Any] = {
        "data": (str(settings.data / "scifact"),),
        "output_dir": str(output),
        "base_model": str(settings.model),
        "max_steps": settings.max_steps,
        "seed": settings.seed,
        **length,
        "eval_backend": settings.eval_backend,
        "device": settings.device,
        **changes,
    }
    return TrainConfig.from_dict(values, source="the improved recipe")


def _finish_model(setting: Any, base: str, tuned: Path, folder: Path) -> None:
    """``folder``: the fine-tune, merged with the base at the setting's alpha (if any), reading
    documents at the setting's length (if any, capped at the model's positions)."""
    from biencoder.training.crossval import set_max_seq_length
    from biencoder.training.merge import merge

    if setting.merge_alpha is not None:
        merge(base, tuned, setting.merge_alpha, folder)
    else:
        with atomic_dir(folder) as tmp:
            shutil.copytree(tuned, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints"))
    if setting.eval_max_seq_length is not None:
        set_max_seq_length(folder, setting.eval_max_seq_length)


def _load(folder: Path, settings: MainJobSettings) -> Encoder:
    """A saved model in the evaluation runtime (an ONNX graph is exported into the folder once)."""
    return load_encoder(folder, settings.eval_backend, device=settings.device)


def _ndcg_per_query(evaluator: Evaluator) -> dict[str, float]:
    return {q: m["ndcg@10"] for q, m in getattr(evaluator, "last_per_query", {}).items()}


def _record_results(card: Path, results: TaskResults) -> None:
    """The final (test) evaluation of the improved model, appended to its card."""
    lines = ["", "## Evaluation (test splits, read once: every choice was made on train queries)", ""]
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
