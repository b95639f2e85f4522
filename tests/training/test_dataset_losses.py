"""A loss per dataset: our trainer against SentenceTransformerTrainer with ``loss={name: ...}``
(MNRL, CoSENTLoss, MSELoss against a teacher), round-robin, the same weights after every step;
the teacher's embeddings cached and reused; the per-dataset losses in the log and the card."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from biencoder.encoder import SentenceEncoder
from biencoder.training import TrainConfig, train
from tests.tiny import WORDS
from tests.training.helpers import without_dropout


def _texts(n: int, k: int, tag: str = "") -> list[str]:
    return [
        " ".join(WORDS[(i * 7 + j * k) % len(WORDS)] for j in range(1 + i % 5)) + f" {i}{tag}"
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def three_sets(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    scores = np.random.default_rng(0).uniform(0, 5, 24).round(2).tolist()
    return {
        "pairs": [{"anchor": a, "positive": p} for a, p in zip(_texts(24, 3), _texts(24, 5), strict=True)],
        "scored": [
            {"sentence1": a, "sentence2": b, "score": s}
            for a, b, s in zip(_texts(24, 2, " s"), _texts(24, 7), scores, strict=True)
        ],
        "general": [
            {"anchor": a, "positive": p} for a, p in zip(_texts(24, 11, " g"), _texts(24, 4), strict=True)
        ],
    }


class _Weighted(torch.nn.Module):
    """A sentence-transformers user's weighted loss: the loss module's value times a factor."""

    def __init__(self, loss: torch.nn.Module, weight: float) -> None:
        super().__init__()
        self.loss, self.weight, self.model = loss, weight, loss.model

    def forward(self, features: Any, labels: Any) -> torch.Tensor:
        return self.weight * self.loss(features, labels)


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("weights", [{}, {"general": 300.0, "scored": 0.5}], ids=["unweighted", "weighted"])
def test_a_loss_per_dataset_equals_sentence_transformers_trainer(
    tiny_model_dir: Path,
    tmp_path: Path,
    three_sets: dict[str, list[dict[str, Any]]],
    weights: dict[str, float],
) -> None:
    pytest.importorskip("accelerate")
    st = pytest.importorskip("sentence_transformers")
    from datasets import Dataset, DatasetDict
    from sentence_transformers.sentence_transformer import losses

    model_dir = without_dropout(tiny_model_dir, tmp_path / "tiny")
    files = [_write(tmp_path / f"{name}.jsonl", rows) for name, rows in three_sets.items()]
    config = TrainConfig(
        data=tuple(str(f) for f in files),
        output_dir=str(tmp_path / "ours"),
        base_model=str(model_dir),
        dataset_losses={"scored": "cosent", "general": "mse"},
        dataset_weights=weights,
        teacher_cache=str(tmp_path / "teacher"),
        batch_size=8,
        max_steps=6,  # two rounds of the three datasets
        max_seq_length=32,
        logging_steps=3,
        save_steps=1000,
        device="cpu",
    )
    result = train(config, show_progress=False)

    teacher = SentenceEncoder.load(model_dir, device="cpu")
    teacher.max_seq_length = 32
    general = three_sets["general"]
    targets = np.stack(
        [teacher.encode([r["anchor"] for r in general]), teacher.encode([r["positive"] for r in general])],
        axis=1,
    )
    model = st.SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 32
    train_sets = DatasetDict(
        {
            "pairs": Dataset.from_list(three_sets["pairs"]),
            "scored": Dataset.from_list(three_sets["scored"]),
            "general": Dataset.from_list(general).add_column("label", targets.tolist()),
        }
    )
    args = st.SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "st"),
        per_device_train_batch_size=8,
        max_steps=6,
        seed=42,
        multi_dataset_batch_sampler="round_robin",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        logging_steps=1000,
    )
    st.SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_sets,
        loss={
            name: _Weighted(loss, weights[name]) if name in weights else loss
            for name, loss in (
                ("pairs", losses.MultipleNegativesRankingLoss(model)),
                ("scored", losses.CoSENTLoss(model)),
                ("general", losses.MSELoss(model)),
            )
        },
    ).train()

    ours = st.SentenceTransformer(str(tmp_path / "ours"), device="cpu").state_dict()
    before = st.SentenceTransformer(str(model_dir), device="cpu").state_dict()
    moved = 0
    for name, value in model.state_dict().items():
        assert torch.allclose(ours[name], value, atol=1e-5, rtol=0), name
        moved += int(not torch.equal(value, before[name]))
    assert moved > 10
    # each dataset's loss in the log, and in the card beside the dataset it trains
    assert {"pairs_loss", "scored_loss", "general_loss"} <= set(result.log_history[0])
    card = (tmp_path / "ours" / "README.md").read_text()
    for loss in ("MultipleNegativesRankingLoss", "CoSENTLoss", "MSELoss"):
        assert f"- loss:{loss}" in card and f"<code>{loss}</code>" in card
    assert "scored_loss" in card and "reimers-2020-multilingual-sentence-bert" in card
    assert ('"weight": 300.0' in card) == bool(weights)  # a weight is shown beside its dataset


def test_teacher_embeddings_are_cached_and_reused(
    tiny_model_dir: Path, tmp_path: Path, three_sets: dict[str, list[dict[str, Any]]], caplog: Any
) -> None:
    general = _write(tmp_path / "general.jsonl", three_sets["general"])

    def run(seed: int) -> None:
        config = TrainConfig(
            data=(str(general),),
            output_dir=str(tmp_path / f"out{seed}"),
            base_model=str(tiny_model_dir),
            loss="mse",
            teacher_cache=str(tmp_path / "teacher"),
            batch_size=8,
            max_steps=2,
            max_seq_length=32,
            seed=seed,
            device="cpu",
        )
        train(config, show_progress=False)

    with caplog.at_level(logging.INFO, logger="biencoder.training.teacher"):
        run(1)
        cached = list((tmp_path / "teacher").glob("*.npy"))
        assert len(cached) == 1 and np.load(cached[0]).shape == (24, 2, 32)
        stamp = cached[0].stat().st_mtime_ns
        caplog.clear()
        run(2)  # another seed, the same texts and teacher: read, not encoded
    assert any("read from" in r.message for r in caplog.records)
    assert not any("encodes" in r.message for r in caplog.records)
    assert cached[0].stat().st_mtime_ns == stamp
    assert not list((tmp_path / "teacher").glob(".*.tmp"))


def test_bad_dataset_losses_are_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = _write(tmp_path / "pairs.jsonl", [{"anchor": "a b", "positive": "c d"}] * 8)

    def config(**kw: Any) -> TrainConfig:
        return TrainConfig(
            data=(str(pairs),),
            output_dir=str(tmp_path / "o"),
            base_model=str(tiny_model_dir),
            device="cpu",
            **kw,
        )

    with pytest.raises(ValueError, match=r"dataset_losses\['pairs'\] must be one of"):
        config(dataset_losses={"pairs": "triplet"})
    with pytest.raises(ValueError, match=r"not datasets of this run; the datasets: \['pairs'\]"):
        train(config(dataset_losses={"quora": "mse"}), show_progress=False)
    with pytest.raises(ValueError, match=r"trains with cosent, which needs .* no scores"):
        train(config(dataset_losses={"pairs": "cosent"}), show_progress=False)
    with pytest.raises(ValueError, match="needs a guide_model"):
        config(dataset_losses={"pairs": "gist"})
    for bad in (0, -1.0, float("inf"), "2", True):
        with pytest.raises(ValueError, match="dataset_weights must map dataset names to positive"):
            config(dataset_weights={"pairs": bad})
    with pytest.raises(ValueError, match=r"dataset_weights names \['quora'\], which are not datasets"):
        train(config(dataset_weights={"quora": 2.0}), show_progress=False)


def test_data_weight_flags_are_parsed_and_bad_ones_named() -> None:
    from biencoder.cli.train import parse_dataset_weights

    assert parse_dataset_weights(["quora=2000", "sts-train=0.5"]) == {"quora": 2000.0, "sts-train": 0.5}
    for bad in ("quora", "quora=", "quora=x", "quora=0", "quora=-3", "quora=inf", "quora=nan", "=2"):
        with pytest.raises(ValueError, match="expected DATASET=WEIGHT"):
            parse_dataset_weights([bad])
    with pytest.raises(ValueError, match="given twice"):
        parse_dataset_weights(["a=1", "a=2"])


def test_data_loss_flags_are_parsed_and_bad_ones_named() -> None:
    from biencoder.cli.train import parse_dataset_losses

    assert parse_dataset_losses(["quora=mse", "a=b=cosent"]) == {"quora": "mse", "a=b": "cosent"}
    for bad in ("quora", "quora=", "=mse"):
        with pytest.raises(ValueError, match=r"--data-loss .*expected DATASET=LOSS"):
            parse_dataset_losses([bad])
    with pytest.raises(ValueError, match="--data-loss: dataset 'a' is given twice"):
        parse_dataset_losses(["a=mse", "a=cosent"])
