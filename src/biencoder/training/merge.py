"""Weight merging (WiSE-FT, Wortsman et al. 2022): alpha * fine-tuned + (1 - alpha) * base.

Interpolating a fine-tuned model with its base keeps much of the gain and gives back some of
what fine-tuning forgot. ``merge`` checks that the two models have the same modules and the same
parameter names, shapes and dtypes (a clear error otherwise), interpolates every floating-point
tensor, keeps the others (they must be equal), and saves the result in the sentence-transformers
layout with the merge recorded in its README. ``choose_alpha`` picks alpha on a dev evaluator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from biencoder.encoder import SentenceEncoder
from biencoder.evaluation.base import Evaluator

logger = logging.getLogger(__name__)

ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(11))


class MergeError(ValueError):
    """The two models cannot be merged (different architectures)."""


@dataclass(frozen=True)
class MergeResult:
    alpha: float
    base: str
    model: str
    scores: dict[float, float] = field(default_factory=dict)  # alpha -> dev metric, if chosen on dev
    metric: str | None = None


def merge_state_dicts(
    base: dict[str, torch.Tensor], model: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """alpha * model + (1 - alpha) * base for every floating tensor; equal non-float tensors kept."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if base.keys() != model.keys():
        only_a, only_b = sorted(base.keys() - model.keys()), sorted(model.keys() - base.keys())
        raise MergeError(f"different parameters: only in base {only_a[:5]}, only in model {only_b[:5]}")
    out = {}
    for name, a in base.items():
        b = model[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise MergeError(f"{name}: base {tuple(a.shape)} {a.dtype} vs model {tuple(b.shape)} {b.dtype}")
        if a.is_floating_point():
            out[name] = alpha * b + (1.0 - alpha) * a
        elif torch.equal(a, b):
            out[name] = b.clone()
        else:
            raise MergeError(f"{name}: non-float tensors differ; these models cannot be interpolated")
    return out


def _check_modules(base: SentenceEncoder, model: SentenceEncoder) -> None:
    kinds_a = [type(m).__name__ for m in base.layers]
    kinds_b = [type(m).__name__ for m in model.layers]
    if kinds_a != kinds_b:
        raise MergeError(f"different module chains: base {kinds_a}, model {kinds_b}")
    config_a, config_b = base.transformer.model.config, model.transformer.model.config
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        value_a, value_b = getattr(config_a, key, None), getattr(config_b, key, None)
        if value_a != value_b:
            raise MergeError(f"different architectures: {key} {value_a} vs {value_b}")
    if base.transformer.tokenizer.get_vocab() != model.transformer.tokenizer.get_vocab():
        raise MergeError("different tokenizer vocabularies: these models cannot be merged")


def merged(base: SentenceEncoder, model: SentenceEncoder, alpha: float) -> SentenceEncoder:
    """A new encoder: ``model``'s modules with interpolated weights (inputs are left untouched)."""
    _check_modules(base, model)
    import copy

    state = merge_state_dicts(base.state_dict(), model.state_dict(), alpha)
    out = copy.deepcopy(model)
    out.load_state_dict(state)
    return out


def choose_alpha(
    base: SentenceEncoder,
    model: SentenceEncoder,
    evaluator: Evaluator,
    grid: Sequence[float] = ALPHA_GRID,
    progress: Callable[[float, float], None] | None = None,
    known: Mapping[float, float] | None = None,
    backend: str = "torch",
) -> tuple[float, dict[float, float]]:
    """The alpha of ``grid`` with the best primary metric on ``evaluator`` (ties: the larger alpha).

    ``known`` holds scores already measured on the same evaluator (alpha 1: the fine-tuned
    model's own dev score, from training), which are not computed again. ``backend="onnx"``
    scores each merge through an fp32 ONNX export of it (the same metrics, ~2x faster on CPU).
    """
    scores: dict[float, float] = {}
    for alpha in grid:
        if known is not None and alpha in known:
            scores[alpha] = float(known[alpha])
            continue
        candidate = merged(base, model, alpha)
        if backend == "onnx":
            from biencoder.runtime.graphs import onnx_twin

            with onnx_twin(candidate) as twin:
                value = float(evaluator(twin)[evaluator.primary_metric])  # type: ignore[arg-type]
        else:
            value = float(evaluator(candidate)[evaluator.primary_metric])
        scores[alpha] = value
        if progress is not None:
            progress(alpha, value)
    best = max(scores, key=lambda a: (scores[a], a))
    return best, scores


def merge(
    base: str | Path,
    model: str | Path,
    alpha: float | None,
    output: str | Path,
    evaluator: Evaluator | None = None,
    grid: Sequence[float] = ALPHA_GRID,
    known: Mapping[float, float] | None = None,
    backend: str = "torch",
) -> MergeResult:
    """Merge and save to ``output``; ``alpha=None`` chooses it on ``evaluator`` (a dev set)."""
    a = SentenceEncoder.load(base, device="cpu")
    b = SentenceEncoder.load(model, device="cpu")
    _check_modules(a, b)
    scores: dict[float, float] = {}
    metric = None
    if alpha is None:
        if evaluator is None:
            raise ValueError("alpha 'auto' needs a dev evaluator (--eval-data)")
        metric = evaluator.primary_metric
        alpha, scores = choose_alpha(
            a,
            b,
            evaluator,
            grid,
            lambda x, v: logger.info("alpha %.2f: %s %.4f", x, metric, v),
            known,
            backend,
        )
    result = MergeResult(alpha=alpha, base=str(base), model=str(model), scores=scores, metric=metric)
    out = merged(a, b, alpha)
    out.save(output)
    _record(Path(model), Path(output), result)
    logger.info("merged %s and %s with alpha %.2f into %s", base, model, alpha, output)
    return result


def _record(model: Path, output: Path, result: MergeResult) -> None:
    """The fine-tuned model's card (if any) plus a section that says how it was merged."""
    from biencoder.atomic import atomic_file
    from biencoder.resolve import resolve_model_path

    source = resolve_model_path(model) / "README.md"
    card = source.read_text(encoding="utf-8") if source.is_file() else f"# {output.name}\n"
    lines = [
        "",
        "## Weight merging",
        "",
        f"The weights are `{result.alpha:g} * {result.model} + {1 - result.alpha:g} * {result.base}` "
        "(WiSE-FT: every floating-point parameter interpolated between the base and the fine-tuned model).",
    ]
    if result.scores:
        lines += [
            "",
            f"alpha was chosen on a dev set by {result.metric}:",
            "",
            "| alpha | " + str(result.metric) + " |",
        ]
        lines += ["|---:|---:|"] + [f"| {a:g} | {v:.4f} |" for a, v in sorted(result.scores.items())]
    with atomic_file(output / "README.md") as tmp:
        tmp.write_text(card.rstrip() + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
