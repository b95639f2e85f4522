"""Training throughput: our trainer against sentence-transformers' SentenceTransformerTrainer, one run.

Both fine-tune all-MiniLM-L6-v2 with MultipleNegativesRankingLoss (scale 20, cosine), batch 64,
AdamW lr 5e-5, max_seq_length 256, on the same data: SciFact's train pairs (919 query, passage
pairs from ``shared/data/scifact``). Rounds are interleaved (ours, reference, ours, ...); each
round runs ``--steps`` optimizer steps of a trainer and times the intervals between consecutive
step ends (data loading, tokenisation or padding, forward, backward, clipping and the optimizer
step: everything a step costs; setup and saving are not timed). Medians over all intervals;
a ratio > 1 means we are faster.

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/train.py [--rounds 3] [--steps 7]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(os.environ.get("BIENCODER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BATCH = 64


def ours_round(model: str, data: str, steps: int, out: Path) -> list[float]:
    """Step-to-step intervals (seconds) of our trainer over ``steps`` steps."""
    from biencoder.training import TrainConfig, train

    ends: list[float] = []
    config = TrainConfig(
        data=(data,),
        output_dir=str(out),
        base_model=model,
        batch_size=BATCH,
        max_steps=steps,
        save_steps=10_000,
        save_total_limit=1,
        device="cpu",
    )
    train(config, show_progress=False, on_step=lambda step, loss: ends.append(time.perf_counter()))
    return [b - a for a, b in itertools.pairwise(ends)]


def reference_round(model: str, rows: dict[str, list[str]], steps: int, out: Path) -> list[float]:
    """Step-to-step intervals (seconds) of SentenceTransformerTrainer over ``steps`` steps."""
    import sentence_transformers as st
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    ends: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ends.append(time.perf_counter())

    encoder = st.SentenceTransformer(model, device="cpu")
    encoder.max_seq_length = 256
    args = st.SentenceTransformerTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=5e-5,
        seed=42,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        logging_steps=500,
    )
    trainer = st.SentenceTransformerTrainer(
        model=encoder,
        args=args,
        train_dataset=Dataset.from_dict(rows),
        loss=MultipleNegativesRankingLoss(encoder),
        callbacks=[Timer()],
    )
    trainer.train()
    return [b - a for a, b in itertools.pairwise(ends)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=7, help="optimizer steps per trainer per round")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (intervals between step ends are timed)")

    import torch

    from biencoder.data.sources import read_beir_pairs
    from biencoder.resolve import BASE_MODEL, resolve_model_path

    if not (DATA / "scifact").is_dir():
        raise SystemExit(f"SciFact not found at {DATA / 'scifact'} (set BIENCODER_DATA)")
    model = str(resolve_model_path(BASE_MODEL))
    pairs = read_beir_pairs(DATA / "scifact", "train")
    rows = {"anchor": pairs.anchors, "positive": pairs.positives}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; SciFact train: {len(pairs)} pairs, "
        f"batch {BATCH}; {args.rounds} interleaved rounds x {args.steps} steps per trainer"
    )
    times: dict[str, list[float]] = {"ours": [], "sentence-transformers": []}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data_dir = str(DATA / "scifact")
        for r in range(args.rounds):
            ours = ours_round(model, data_dir, args.steps, Path(tmp) / f"ours-{r}")
            ref = reference_round(model, rows, args.steps, Path(tmp) / f"st-{r}")
            times["ours"] += ours
            times["sentence-transformers"] += ref
            print(
                f"round {r + 1}: ours {statistics.median(ours):.2f} s/step, "
                f"sentence-transformers {statistics.median(ref):.2f} s/step",
                flush=True,
            )
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(
            f"{name:>22}: median {median:.3f} s/step = {BATCH / median:.1f} pairs/s "
            f"over {len(times[name])} steps"
        )
    ratio = medians["sentence-transformers"] / medians["ours"]
    print(f"ratio (ours / sentence-transformers, pairs/s): {ratio:.3f}  (target >= 1.0)")


if __name__ == "__main__":
    main()
