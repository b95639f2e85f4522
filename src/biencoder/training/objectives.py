"""What each dataset trains with: its loss and, for the losses that need them, its labels.

A run's datasets each get the loss ``TrainConfig.loss_of(name)`` names (sentence-transformers'
``loss={"name": ...}``). One module is built per distinct loss, so a guide is loaded once.
Labels are a tensor per dataset, indexed by the batch's rows:

- CoSENTLoss: the rows' scores (a ``score`` column, or STSb's gold score);
- MSELoss: the teacher's embeddings of every text, [rows, columns, dim] (``biencoder.training.teacher``).

A dataset's weight multiplies its loss, as a sentence-transformers user would by wrapping the loss
module. MSELoss needs one: on unit vectors its mean over 384 dimensions is tiny, and its
gradients are about 1/2000 of MNRL's (``benchmarks/loss_scale.py``), so at weight 1 it hardly
moves the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from biencoder.data.pairs import PairDataset
from biencoder.encoder import SentenceEncoder
from biencoder.losses import (
    CachedMultipleNegativesRankingLoss,
    CoSENTLoss,
    GISTEmbedLoss,
    MSELoss,
    MultipleNegativesRankingLoss,
)
from biencoder.training.config import TrainConfig
from biencoder.training.teacher import teacher_embeddings

logger = logging.getLogger(__name__)

IN_BATCH = ("mnrl", "cached_mnrl", "gist")  # losses whose negatives are the batch's other rows


@dataclass(frozen=True)
class Objective:
    """One dataset's loss (``name``: the config's short name), its labels (None: none needed) and
    the weight its loss is multiplied by (``TrainConfig.dataset_weights``)."""

    name: str
    loss: Any  # an nn.Module with forward_backward, card_name and config_dict
    labels: Tensor | None = None
    weight: float = 1.0

    def card_params(self) -> dict[str, Any]:
        """The loss's settings for the model card, with the weight when it is not 1."""
        params = dict(self.loss.config_dict())
        return params if self.weight == 1.0 else {**params, "weight": self.weight}

    def rows(self, rows: Sequence[int], device: torch.device) -> Tensor | None:
        """The labels of a batch's rows, on ``device``."""
        if self.labels is None:
            return None
        return self.labels[torch.as_tensor(list(rows), dtype=torch.long)].to(device, non_blocking=True)


def load_guide(config: TrainConfig, encoder: SentenceEncoder) -> SentenceEncoder:
    """The frozen guide for GISTEmbedLoss; it embeds the model's own tokens, so it must share them."""
    if config.guide_model is None:
        raise ValueError("loss 'gist' needs a guide model (--guide)")
    guide = SentenceEncoder.load(config.guide_model, device=str(encoder.device))
    if guide.transformer.tokenizer.get_vocab() != encoder.transformer.tokenizer.get_vocab():
        raise ValueError(
            f"the guide {config.guide_model} has another tokenizer vocabulary than the model; "
            "GISTEmbedLoss here needs a guide of the same tokenizer"
        )
    if guide.max_seq_length < encoder.max_seq_length:
        raise ValueError(
            f"the guide's max_seq_length {guide.max_seq_length} is below the model's {encoder.max_seq_length}"
        )
    return guide


def check_dataset_losses(config: TrainConfig, datasets: Sequence[PairDataset]) -> None:
    """Every name in ``dataset_losses`` and ``dataset_weights`` must name one dataset, and a named
    dataset must be unique."""
    names = [d.name for d in datasets]
    tables: dict[str, dict[str, Any]] = {
        "dataset_losses": config.dataset_losses,
        "dataset_weights": config.dataset_weights,
    }
    for table, named in tables.items():
        unknown = sorted(set(named) - set(names))
        if unknown:
            raise ValueError(
                f"{table} names {unknown}, which are not datasets of this run; the datasets: {names}"
            )
        repeated = sorted({n for n in named if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"{table}: several datasets are named {repeated}; give their files distinct names"
            )
    for data in datasets:
        loss = config.loss_of(data.name)
        if loss == "cosent" and (data.scores is None or data.num_columns != 2):
            raise ValueError(
                f"dataset {data.name} trains with cosent, which needs (sentence1, sentence2) pairs with a "
                "score column (score or label); it has "
                + (f"{data.num_columns} text columns" if data.num_columns != 2 else "no scores")
            )


def build_objectives(
    config: TrainConfig,
    encoder: SentenceEncoder,
    datasets: Sequence[PairDataset],
    gather: bool,
    show_progress: bool | None = None,
) -> list[Objective]:
    """One :class:`Objective` per dataset, in the datasets' order."""
    check_dataset_losses(config, datasets)
    modules: dict[str, Any] = {}
    teacher = config.teacher_model or config.base_model
    out = []
    for data in datasets:
        name = config.loss_of(data.name)
        if name not in modules:
            if name == "gist":
                guide = load_guide(config, encoder)
                modules[name] = GISTEmbedLoss(
                    encoder,
                    guide,
                    config.gist_temperature,
                    config.gist_margin_strategy,
                    config.gist_margin,
                    gather_across_devices=gather,
                    guide_name=config.guide_model,
                )
            elif name == "cached_mnrl":
                modules[name] = CachedMultipleNegativesRankingLoss(
                    encoder, config.scale, config.similarity, gather, mini_batch_size=config.mini_batch_size
                )
            elif name == "mse":
                modules[name] = MSELoss(encoder, teacher_name=teacher)
            elif name == "cosent":
                modules[name] = CoSENTLoss(encoder, config.scale)
            else:
                modules[name] = MultipleNegativesRankingLoss(encoder, config.scale, config.similarity, gather)
        labels = None
        if name == "cosent":
            labels = torch.tensor(data.scores, dtype=torch.float32)
        elif name == "mse":
            vectors = teacher_embeddings(
                data,
                teacher,
                config.max_seq_length,
                config.teacher_cache,
                device=str(encoder.device),
                show_progress=show_progress,
            )
            labels = torch.from_numpy(vectors)
        weight = config.weight_of(data.name)
        logger.info("%s: %s%s", data.name, modules[name].card_name, "" if weight == 1 else f" x {weight:g}")
        out.append(Objective(name, modules[name], labels, weight))
    return out
