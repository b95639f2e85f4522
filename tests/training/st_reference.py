"""Helpers that run sentence-transformers' own trainer on tiny inputs, for reference comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def st_training_order(
    model_dir: Path,
    columns: list[dict[str, list[str]]],
    batch_size: int,
    epochs: int,
    seed: int,
    out: Path,
    multi_dataset_batch_sampler: str = "round_robin",
) -> list[list[tuple[int, ...]]]:
    """The anchor token ids of every batch SentenceTransformerTrainer feeds its loss, in order."""
    st = __import__("sentence_transformers")
    from datasets import Dataset, DatasetDict
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    seen: list[list[tuple[int, ...]]] = []

    class Recording(MultipleNegativesRankingLoss):
        def forward(self, sentence_features: Any, labels: Any) -> Any:
            features = list(sentence_features)
            ids, mask = features[0]["input_ids"], features[0]["attention_mask"]
            seen.append([tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask, strict=True)])
            return super().forward(features, labels)

    model = st.SentenceTransformer(str(model_dir), device="cpu")
    data = [Dataset.from_dict(c) for c in columns]
    train = data[0] if len(data) == 1 else DatasetDict({f"d{i}": d for i, d in enumerate(data)})
    args = st.SentenceTransformerTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        seed=seed,
        multi_dataset_batch_sampler=multi_dataset_batch_sampler,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        logging_steps=1000,
    )
    trainer = st.SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=Recording(model)
    )
    trainer.train()
    return seen
