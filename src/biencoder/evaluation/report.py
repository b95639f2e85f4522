"""Reports of evaluation results: a markdown table, JSON, and a PNG chart comparing models.

``results`` everywhere maps a model label (``base``, ``fine-tuned``) to a task name to that
task's metrics (``{"scifact": {"ndcg@10": 0.64, ...}}``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biencoder.atomic import atomic_file
from biencoder.data.texts import read_json_object

logger = logging.getLogger(__name__)

Results = Mapping[str, Mapping[str, Mapping[str, float]]]


def _tasks_and_metrics(results: Results, shown: Mapping[str, Sequence[str]] | None) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    tasks = list(dict.fromkeys(task for by_task in results.values() for task in by_task))
    for task in tasks:
        names = (
            list(shown[task])
            if shown and task in shown
            else list(dict.fromkeys(m for by_task in results.values() for m in by_task.get(task, {})))
        )
        rows += [(task, name) for name in names]
    return rows


def markdown_table(results: Results, shown: Mapping[str, Sequence[str]] | None = None) -> str:
    """One row per (task, metric), one column per model; a change column when there are two models."""
    models = list(results)
    rows = _tasks_and_metrics(results, shown)
    header = ["task", "metric", *models] + (["change"] if len(models) == 2 else [])
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for task, name in rows:
        values = [results[m].get(task, {}).get(name) for m in models]
        cells = [task, name, *("" if v is None else f"{v:.4f}" for v in values)]
        if len(models) == 2:
            a, b = values
            cells.append("" if a is None or b is None else f"{b - a:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """What :func:`write_json` wrote; a malformed file raises ValueError naming file:line."""
    return read_json_object(Path(path), ValueError)


def plot_comparison(
    path: str | Path, results: Results, shown: Mapping[str, Sequence[str]] | None = None, title: str = ""
) -> Path:
    """A grouped bar chart (PNG): one group per (task, metric), one bar per model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the chart needs matplotlib: pip install 'biencoder[eval]'") from None
    path = Path(path)
    models = list(results)
    rows = _tasks_and_metrics(results, shown)
    width = 0.8 / max(len(models), 1)
    lowest = 0.0
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.5))
    for j, model in enumerate(models):
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(rows))]
        ys = [results[model].get(task, {}).get(name, 0.0) for task, name in rows]
        lowest = min([lowest, *ys])
        bars = ax.bar(xs, ys, width, label=model)
        ax.bar_label(bars, labels=[f"{y:.3f}" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(rows)), [f"{task}\n{name}" for task, name in rows], fontsize=8)
    ax.set_ylim(lowest - 0.05 if lowest < 0 else 0.0, 1.05)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("score")
    ax.set_title(title or " vs ".join(models))
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# Result-name suffixes of the retrieval modes (see biencoder.evaluation.hybrid.SUFFIXES) and their labels.
_VARIANTS = (("", ""), ("-bm25", "BM25"), ("-hybrid", "hybrid"))


def _difference_bars(
    results: Results, task: str, metric: str, baseline: str
) -> list[tuple[str, float, int, str]]:
    """(label, value - the baseline's dense value, colour index, variant) of every bar of one panel."""
    reference = results[baseline][task][metric]
    bars = []
    for n, (model, by_task) in enumerate(results.items()):
        for suffix, variant in _VARIANTS:
            value = by_task.get(task + suffix, {}).get(metric)
            if value is None or (model == baseline and not suffix):
                continue
            label = variant if variant == "BM25" else f"{model} {variant}".strip()
            bars.append((label, value - reference, n, variant))
    return bars


def plot_differences(
    path: str | Path,
    results: Results,
    panels: Sequence[tuple[str, str]],
    *,
    baseline: str = "base",
    title: str = "",
) -> Path:
    """A PNG with one panel per (task, metric): each model's (and its BM25 / hybrid rows') difference
    from ``baseline``'s dense value, as labelled horizontal bars; the panels share one scale, so
    a bar's length means the same in every task.

    A task's BM25 and hybrid rows are read from ``<task>-bm25`` / ``<task>-hybrid``; panels whose
    task the baseline lacks are left out.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the chart needs matplotlib: pip install 'biencoder[eval]'") from None
    path = Path(path)
    shown = [(t, m) for t, m in panels if m in results.get(baseline, {}).get(t, {})]
    if not shown:
        raise ValueError(f"none of the panels {list(panels)} has a {baseline!r} value to compare with")
    colours = [f"C{i}" for i in range(10)]  # the default colour cycle: one colour a model
    every = [b[1] for t, m in shown for b in _difference_bars(results, t, m, baseline)]
    height = max(len(_difference_bars(results, t, m, baseline)) for t, m in shown)
    span = max([abs(v) for v in every] + [0.01])
    low, high = min([0.0, *every]), max([0.0, *every])
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 1.2 + 0.45 * max(height, 2)))
    for ax, (task, metric) in zip(list(np.atleast_1d(axes)), shown, strict=True):
        bars = _difference_bars(results, task, metric, baseline)
        ys = list(range(height - 1, height - 1 - len(bars), -1))  # from the top, same bar size in every panel
        values = [b[1] for b in bars]
        drawn = ax.barh(
            ys,
            values,
            color=["0.6" if v == "BM25" else colours[c % len(colours)] for _, _, c, v in bars],
            edgecolor="black",
            linewidth=0.4,
        )
        for patch, (_, _, _, variant) in zip(drawn, bars, strict=True):
            if variant == "hybrid":
                patch.set_hatch("///")
        ax.bar_label(drawn, labels=[f"{v:+.3f}" for v in values], fontsize=8, padding=3)
        ax.set_yticks(ys, [b[0] for b in bars], fontsize=8)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlim(low - 0.45 * span if low < 0 else -0.05 * span, high + 0.3 * span)
        ax.set_ylim(-0.6, height - 0.4)
        ax.set_title(f"{task} {metric}\n{baseline} dense = {results[baseline][task][metric]:.4f}", fontsize=9)
        ax.set_xlabel(f"difference from {baseline} dense", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(title or f"difference from {baseline}", fontsize=10)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
