"""Model soups (Wortsman et al. 2022): the weights of several fine-tunes of one base, averaged.

Fine-tunes that start from the same base (one recipe run with seeds 42, 43 and 44) stay in one
basin of the loss, so the mean of their weights is a model of its own, often better than each
and never costlier to run than one. A *uniform* soup weighs them equally; ``weights`` gives any
other convex combination. WiSE-FT (``biencoder.training.merge``) is the two-model case: a
fine-tune and its base, weighted by alpha; it uses the same arithmetic and the same checks.

The checks come first: the models must have the same module chain, architecture and vocabulary,
and their state dicts the same parameter names, shapes and dtypes; integer tensors (position
ids) must be equal, since there is no mean of them. Every error names the parameter and models.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence

import torch

from biencoder.encoder import SentenceEncoder

logger = logging.getLogger(__name__)

_ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


class MergeError(ValueError):
    """The models cannot be averaged or interpolated (different architectures or parameters)."""


def normalised_weights(weights: Sequence[float] | None, count: int, what: str) -> tuple[float, ...]:
    """``weights`` scaled to sum 1 (equal when None); each must be finite and >= 0, their sum > 0."""
    if count < 1:
        raise ValueError(f"no {what} to weigh")
    if weights is None:
        return (1.0 / count,) * count
    if len(weights) != count:
        raise ValueError(f"{count} {what} but {len(weights)} weights ({list(weights)}); give one per {what}")
    values = []
    for w in weights:
        try:
            value = float(w)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"weights of {what} must be finite numbers >= 0, got {w!r}")
        values.append(value)
    total = sum(values)
    if total <= 0:
        raise ValueError(f"weights of {what} sum to {total:g}; at least one must be positive")
    return tuple(v / total for v in values)


def check_states(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str]) -> None:
    """Each state dict against the first: same names, shapes and dtypes; equal non-float tensors."""
    first, label = states[0], names[0]
    for other, state in zip(names[1:], states[1:], strict=True):
        if state.keys() != first.keys():
            only_a, only_b = sorted(first.keys() - state.keys()), sorted(state.keys() - first.keys())
            raise MergeError(
                f"different parameters: only in {label} {only_a[:5]}, only in {other} {only_b[:5]}"
            )
        for name, a in first.items():
            b = state[name]
            if a.shape != b.shape or a.dtype != b.dtype:
                raise MergeError(
                    f"{name}: {label} {tuple(a.shape)} {a.dtype} vs {other} {tuple(b.shape)} {b.dtype}"
                )
            if not a.is_floating_point() and not torch.equal(a, b):
                raise MergeError(
                    f"{name}: non-float tensors differ between {label} and {other}; "
                    "these models cannot be averaged"
                )


def soup_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The weighted mean of every floating tensor of ``states``; equal non-float tensors kept.

    ``weights`` (equal by default) are scaled to sum 1. ``names`` label the states in errors
    (default ``models[0]``, ``models[1]``, ...). The sum runs in float64 and is rounded once to
    each tensor's dtype, so a soup of identical models, or a weight of 1 on one model, gives that
    model's tensors back bit for bit.
    """
    w = normalised_weights(weights, len(states), "models")
    labels = list(names) if names is not None else [f"models[{i}]" for i in range(len(states))]
    if len(labels) != len(states):
        raise ValueError(f"{len(states)} models but {len(labels)} names")
    check_states(states, labels)
    out: dict[str, torch.Tensor] = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            out[name] = first.clone()
            continue
        total = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        for weight, state in zip(w, states, strict=True):
            if weight:
                total.add_(state[name].to(torch.float64), alpha=weight)
        out[name] = total.to(first.dtype)
    return out


def check_modules(a: SentenceEncoder, b: SentenceEncoder, names: tuple[str, str] = ("base", "model")) -> None:
    """Same module chain, transformer architecture and tokenizer vocabulary, or a MergeError."""
    label_a, label_b = names
    kinds_a = [type(m).__name__ for m in a.layers]
    kinds_b = [type(m).__name__ for m in b.layers]
    if kinds_a != kinds_b:
        raise MergeError(f"different module chains: {label_a} {kinds_a}, {label_b} {kinds_b}")
    config_a, config_b = a.transformer.model.config, b.transformer.model.config
    for key in _ARCHITECTURE_KEYS:
        value_a, value_b = getattr(config_a, key, None), getattr(config_b, key, None)
        if value_a != value_b:
            raise MergeError(f"different architectures: {key} {value_a} ({label_a}) vs {value_b} ({label_b})")
    if a.transformer.tokenizer.get_vocab() != b.transformer.tokenizer.get_vocab():
        raise MergeError(
            f"different tokenizer vocabularies ({label_a}, {label_b}): these models cannot be merged"
        )


def soup(
    models: Sequence[SentenceEncoder],
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> SentenceEncoder:
    """A new encoder: the first model's modules with the (weighted) mean of all models' weights.

    The inputs are left untouched. ``names`` label the models in errors (their paths, say).
    """
    if not models:
        raise ValueError("a soup needs at least one model")
    labels = list(names) if names is not None else [f"models[{i}]" for i in range(len(models))]
    if len(labels) != len(models):
        raise ValueError(f"{len(models)} models but {len(labels)} names")
    for label, model in zip(labels[1:], models[1:], strict=True):
        check_modules(models[0], model, (labels[0], label))
    state = soup_state_dicts([m.state_dict() for m in models], weights, labels)
    out = copy.deepcopy(models[0])
    out.load_state_dict(state)
    logger.info("soup of %d models: %s", len(models), ", ".join(labels))
    return out
