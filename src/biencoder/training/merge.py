"""Weight merging (WiSE-FT, Wortsman et al. 2022): alpha * fine-tuned + (1 - alpha) * base.

Interpolating a fine-tuned model with its base keeps much of the gain and gives back some of
what fine-tuning forgot. ``merge`` takes one fine-tuned model or several fine-tunes of the same
base: several are averaged first (a model soup, ``biencoder.training.soup``), and the model or
the soup is then interpolated with the base; without a base the soup itself is the result. The
models must have the same modules and parameter names, shapes and dtypes (a clear error
otherwise); every floating-point tensor is interpolated, the others kept (they must be equal),
and the result is saved in the sentence-transformers layout with the soup and the merge recorded
in its README.

``choose_alpha`` picks alpha on dev: one evaluator's primary metric, or the mean (optionally
weighted) of several, so that a general-domain set (STS Benchmark) counts next to the in-domain
dev set, whose score alone cannot see what fine-tuning forgot elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from biencoder.encoder import SentenceEncoder
from biencoder.evaluation.base import Evaluator
from biencoder.protocol import Encoder
from biencoder.training.soup import (
    MergeError,
    check_modules,
    normalised_weights,
    soup,
    soup_state_dicts,
)

__all__ = [
    "ALPHA_GRID",
    "AlphaChoice",
    "MergeError",
    "MergeResult",
    "Objective",
    "choose_alpha",
    "merge",
    "merge_state_dicts",
    "merged",
    "soup",
    "soup_state_dicts",
]

logger = logging.getLogger(__name__)

ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(11))
BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class MergeResult:
    """How a merged model was made: its ingredients, alpha, and the dev scores that chose alpha."""

    alpha: float  # the weight of the model (or the soup) against the base; 1.0 without a base
    base: str | None  # None: a plain soup
    model: str  # the fine-tuned model, or "soup of N models"
    scores: dict[float, float] = field(default_factory=dict)  # alpha -> objective, if chosen on dev
    metric: str | None = None  # the objective: a primary metric, or a mean of several
    parts: dict[float, dict[str, float]] = field(default_factory=dict)  # alpha -> column -> metric
    models: tuple[str, ...] = ()  # the soup's ingredients (the one model when there is no soup)
    weights: tuple[float, ...] = ()  # their weights in the soup, summing to 1


def merge_state_dicts(
    base: dict[str, torch.Tensor], model: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """alpha * model + (1 - alpha) * base for every floating tensor; equal non-float tensors kept.

    A soup of two with weights (1 - alpha, alpha): the same arithmetic and checks, so alpha 0
    and 1 give the base and the model back bit for bit.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return soup_state_dicts([base, model], [1.0 - alpha, alpha], names=("base", "model"))


def merged(base: SentenceEncoder, model: SentenceEncoder, alpha: float) -> SentenceEncoder:
    """A new encoder: ``model``'s modules with interpolated weights (inputs are left untouched)."""
    check_modules(base, model)
    import copy

    state = merge_state_dicts(base.state_dict(), model.state_dict(), alpha)
    out = copy.deepcopy(model)
    out.load_state_dict(state)
    return out


@dataclass(frozen=True)
class Objective:
    """What ``choose_alpha`` maximises: the weighted mean of dev evaluators' primary metrics.

    With one evaluator it is that evaluator's primary metric (column ``ndcg@10``). With several,
    each is a column named ``<evaluator>_<metric>`` (``scifact-dev_ndcg@10``) and the objective
    weighs them by ``weights`` (scaled to sum 1), so no one dev set decides alone.
    """

    evaluators: tuple[Evaluator, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.evaluators) or not self.evaluators:
            raise ValueError(f"{len(self.evaluators)} evaluators but {len(self.weights)} weights")
        columns = self.columns
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise ValueError(f"two dev evaluators give the same column {twice}: give them different names")

    @classmethod
    def of(
        cls, evaluators: Evaluator | Sequence[Evaluator], weights: Sequence[float] | None = None
    ) -> Objective:
        """One evaluator or several, equally weighted unless ``weights`` (one per evaluator) says."""
        evs = tuple(evaluators) if isinstance(evaluators, list | tuple) else (evaluators,)
        return cls(evs, normalised_weights(weights, len(evs), "evaluators"))

    @property
    def columns(self) -> tuple[str, ...]:
        """Each evaluator's column in the README's table and in ``MergeResult.parts``."""
        if len(self.evaluators) == 1:
            return (self.evaluators[0].primary_metric,)
        return tuple(f"{e.name}_{e.primary_metric}" for e in self.evaluators)

    @property
    def name(self) -> str:
        if len(self.evaluators) == 1:
            return self.columns[0]
        if len(set(self.weights)) == 1:
            return "the mean of " + ", ".join(self.columns)
        return " + ".join(f"{w:.4g} x {c}" for w, c in zip(self.weights, self.columns, strict=True))

    def __call__(self, encoder: Encoder) -> tuple[float, dict[str, float]]:
        """The objective and each evaluator's primary metric (by column)."""
        parts = {
            c: float(e(encoder)[e.primary_metric]) for c, e in zip(self.columns, self.evaluators, strict=True)
        }
        return sum(w * v for w, v in zip(self.weights, parts.values(), strict=True)), parts


@dataclass(frozen=True)
class AlphaChoice:
    """The chosen alpha, and for every alpha of the grid the objective and each evaluator's part."""

    alpha: float
    scores: dict[float, float]  # alpha -> objective
    parts: dict[float, dict[str, float]]  # alpha -> column -> primary metric
    metric: str  # the objective's name


def choose_alpha(
    base: SentenceEncoder,
    model: SentenceEncoder,
    evaluator: Evaluator | Sequence[Evaluator] | Objective,
    grid: Sequence[float] = ALPHA_GRID,
    progress: Callable[[float, float], None] | None = None,
    known: Mapping[float, float] | None = None,
    backend: str = "torch",
) -> AlphaChoice:
    """The alpha of ``grid`` with the best objective on dev (ties: the larger alpha).

    ``evaluator``: one evaluator (its primary metric is maximised), several (the mean of their
    primary metrics) or an ``Objective`` (a weighted mean). ``known`` holds scores already
    measured on the same objective (alpha 1: the fine-tuned model's own dev score, from
    training), which are not computed again. Such a score is one evaluator's, so ``known`` is
    used only when the objective is one evaluator; with several it is ignored and measured.
    ``backend="onnx"`` scores each merge through an fp32 ONNX export of it (the same metrics,
    ~2x faster on CPU).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if not grid:
        raise ValueError("the alpha grid is empty")
    objective = evaluator if isinstance(evaluator, Objective) else Objective.of(evaluator)
    if known and len(objective.evaluators) > 1:
        logger.info("known scores are one evaluator's; %s is measured at every alpha", objective.name)
        known = None
    scores: dict[float, float] = {}
    parts: dict[float, dict[str, float]] = {}
    for alpha in grid:
        if known is not None and alpha in known:
            scores[alpha] = float(known[alpha])
            parts[alpha] = {objective.columns[0]: scores[alpha]}
            continue
        scores[alpha], parts[alpha] = _score(objective, merged(base, model, alpha), backend)
        if len(parts[alpha]) > 1:
            logger.info("alpha %.2f: %s", alpha, ", ".join(f"{k} {v:.4f}" for k, v in parts[alpha].items()))
        if progress is not None:
            progress(alpha, scores[alpha])
    best = max(scores, key=lambda a: (scores[a], a))
    return AlphaChoice(alpha=best, scores=scores, parts=parts, metric=objective.name)


def _score(objective: Objective, candidate: SentenceEncoder, backend: str) -> tuple[float, dict[str, float]]:
    if backend == "onnx":
        from biencoder.runtime.graphs import onnx_twin

        with onnx_twin(candidate) as twin:  # one export serves every evaluator
            return objective(twin)  # type: ignore[arg-type]
    return objective(candidate)


def merge(
    base: str | Path | None,
    model: str | Path | Sequence[str | Path],
    alpha: float | None,
    output: str | Path,
    evaluator: Evaluator | Sequence[Evaluator] | None = None,
    grid: Sequence[float] = ALPHA_GRID,
    known: Mapping[float, float] | None = None,
    backend: str = "torch",
    *,
    soup_weights: Sequence[float] | None = None,
    eval_weights: Sequence[float] | None = None,
) -> MergeResult:
    """Merge and save to ``output``; ``alpha=None`` chooses it on ``evaluator`` (a dev set).

    ``model``: one fine-tuned model, or several fine-tunes of the same base, which are averaged
    first (weighted by ``soup_weights``, uniform by default: a model soup) and then interpolated
    with ``base`` like one model. Without ``base`` the soup itself is saved (several models, no
    alpha). ``evaluator`` may be several dev evaluators, averaged (weighted by ``eval_weights``)
    into the objective alpha maximises. ``known`` (alpha 1's score from training) applies to one
    model and one evaluator only: for a soup, alpha 1 is the soup, not the model it was measured on.
    """
    paths = [model] if isinstance(model, str | Path) else list(model)
    _check_request(base, paths, alpha)
    objective = None
    if base is not None and alpha is None:
        if evaluator is None:
            raise ValueError("alpha 'auto' needs a dev evaluator (--eval-data)")
        objective = Objective.of(evaluator, eval_weights)
    names = tuple(str(p) for p in paths)
    weights = normalised_weights(soup_weights, len(paths), "models")
    loaded = [SentenceEncoder.load(p, device="cpu") for p in paths]
    tuned = loaded[0] if len(loaded) == 1 else soup(loaded, weights, names)
    del loaded  # the soup is all that is needed from here on
    label = names[0] if len(names) == 1 else f"soup of {len(names)} models"
    if base is None:
        out = tuned
        result = MergeResult(alpha=1.0, base=None, model=label, models=names, weights=weights)
    else:
        a = SentenceEncoder.load(base, device="cpu")
        check_modules(a, tuned, (f"base {base}", f"model {label}"))
        chosen, choice = _alpha(a, tuned, alpha, objective, grid, known if len(paths) == 1 else None, backend)
        result = MergeResult(
            alpha=chosen,
            base=str(base),
            model=label,
            scores=choice.scores if choice else {},
            metric=choice.metric if choice else None,
            parts=choice.parts if choice else {},
            models=names,
            weights=weights,
        )
        out = merged(a, tuned, chosen)
    out.save(output)
    _record(Path(paths[0]), Path(output), result)
    logger.info("merged %s (base %s, alpha %.2f) into %s", label, base, result.alpha, output)
    return result


def _alpha(
    base: SentenceEncoder,
    tuned: SentenceEncoder,
    alpha: float | None,
    objective: Objective | None,
    grid: Sequence[float],
    known: Mapping[float, float] | None,
    backend: str,
) -> tuple[float, AlphaChoice | None]:
    """``alpha`` as given, or (no alpha, an objective) the one chosen on dev, with the choice."""
    if objective is None:
        return cast(float, alpha), None  # merge() makes an objective whenever alpha is None
    name = objective.name

    def progress(x: float, value: float) -> None:
        logger.info("alpha %.2f: %s %.4f", x, name, value)

    choice = choose_alpha(base, tuned, objective, grid, progress, known, backend)
    return choice.alpha, choice


def _check_request(base: str | Path | None, paths: Sequence[str | Path], alpha: float | None) -> None:
    """The errors a merge can find before loading anything."""
    if not paths:
        raise ValueError("no model to merge")
    if base is None:
        if alpha is not None:
            raise ValueError(f"alpha {alpha:g} weighs the model against a base, and no base was given")
        if len(paths) == 1:
            raise ValueError(
                f"one model ({paths[0]}) and no base: nothing to merge; "
                "give a base, or several models to average"
            )
    elif alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")


def _record(model: Path, output: Path, result: MergeResult) -> None:
    """The (first) fine-tuned model's card, if any, plus sections that say how it was made."""
    from biencoder.atomic import atomic_file
    from biencoder.resolve import resolve_model_path

    source = resolve_model_path(model) / "README.md"
    card = source.read_text(encoding="utf-8") if source.is_file() else f"# {output.name}\n"
    lines = _soup_lines(result) + _merge_lines(result)
    with atomic_file(output / "README.md") as tmp:
        tmp.write_text(card.rstrip() + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _soup_lines(result: MergeResult) -> list[str]:
    if len(result.models) < 2:
        return []
    uniform = len(set(result.weights)) == 1
    lines = [
        "",
        "## Model soup",
        "",
        f"The weights are the {'uniform' if uniform else 'weighted'} mean of {len(result.models)} "
        "fine-tunes of the same base (a model soup, Wortsman et al. 2022): every floating-point "
        "parameter averaged."
        + ("" if result.base is not None else " The soup is not interpolated with a base."),
        "",
        "| model | weight |",
        "|---|---:|",
    ]
    return lines + [f"| {m} | {w:.4g} |" for m, w in zip(result.models, result.weights, strict=True)]


def _merge_lines(result: MergeResult) -> list[str]:
    if result.base is None:
        return []
    tuned = "soup" if len(result.models) > 1 else result.model
    lines = [
        "",
        "## Weight merging",
        "",
        f"The weights are `{result.alpha:g} * {tuned} + {1 - result.alpha:g} * {result.base}` "
        "(WiSE-FT: every floating-point parameter interpolated between the base and the fine-tuned "
        + ("soup above)." if len(result.models) > 1 else "model)."),
    ]
    if not result.scores:
        return lines
    columns = list(dict.fromkeys(c for part in result.parts.values() for c in part))  # evaluators' order
    several = len(columns) > 1
    header = ["alpha", *columns, "objective"] if several else ["alpha", str(result.metric)]
    lines += ["", f"alpha was chosen on a dev set by {result.metric}:", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for a, value in sorted(result.scores.items()):
        alpha = f"**{a:g}**" if a == result.alpha else f"{a:g}"
        cells = [f"{result.parts.get(a, {}).get(c, float('nan')):.4f}" for c in columns] if several else []
        lines.append("| " + " | ".join([alpha, *cells, f"{value:.4f}"]) + " |")
    return lines
