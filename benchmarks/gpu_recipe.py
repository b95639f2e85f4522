"""The card's full run, timed on a GPU: N steps of its recipe, extrapolated to 532,761 pairs x 3 epochs.

The card's recipe (batch 64, MultipleNegativesRankingLoss scale 20, AdamW lr 5e-5, max_seq_length
256, dropout on) on MS MARCO-shaped pairs (real MS MARCO questions against real MS MARCO passages,
``benchmarks/train.py``'s data), with bf16 autocast and fp32 master weights, fused AdamW and
PyTorch's fused attention. Three trainers in one run, each for ``--warmup`` untimed steps and then
``--steps`` timed ones: ours unpadded (the default), ours padded (``--no-unpad``) and
sentence-transformers' trainer (``bf16=True``). Each is extrapolated to the card's 24,975 steps
(ceil(532,761 / 64) x 3 epochs), evaluation and saving aside.

    python benchmarks/gpu_recipe.py                      # on the lent GPU: cuda, bf16
    python benchmarks/gpu_recipe.py --device cpu --precision fp32 --steps 3 --warmup 1   # smoke test
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import DATA, msmarco_shaped, token_stats  # benchmarks/train.py

BATCH = 64
CARD_PAIRS = 532_761
CARD_EPOCHS = 3
CARD_STEPS = math.ceil(CARD_PAIRS / BATCH) * CARD_EPOCHS  # 24,975


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours(model: str, data: Path, args: argparse.Namespace, out: Path, unpad: bool) -> list[float]:
    """Seconds per step of our trainer: intervals between the ends of the timed steps."""
    from biencoder.training import TrainConfig, train

    ends: list[float] = []

    def on_step(step: int, loss: float) -> None:  # the loss was read: the step has finished
        if step >= args.warmup:
            _sync(args.device)
            ends.append(time.perf_counter())

    config = TrainConfig(
        data=(str(data),),
        output_dir=str(out),
        base_model=model,
        batch_size=BATCH,
        max_steps=args.warmup + args.steps,
        save_steps=1_000_000,
        save_total_limit=1,
        precision=args.precision,
        unpad=unpad,
        device=args.device,
    )
    train(config, show_progress=False, on_step=on_step)
    return [b - a for a, b in itertools.pairwise(ends)]


def reference(model: str, rows: dict[str, list[str]], args: argparse.Namespace, out: Path) -> list[float]:
    """Seconds per step of sentence-transformers' trainer with the same settings."""
    import sentence_transformers as st
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    ends: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, a: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= args.warmup:
                _sync(args.device)
                ends.append(time.perf_counter())

    encoder = st.SentenceTransformer(model, device=args.device)
    encoder.max_seq_length = 256
    training_args = st.SentenceTransformerTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=args.warmup + args.steps,
        learning_rate=5e-5,
        seed=42,
        bf16=args.precision != "fp32" and args.device.startswith("cuda"),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
        logging_steps=1_000_000,
    )
    trainer = st.SentenceTransformerTrainer(
        model=encoder,
        args=training_args,
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
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per trainer")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (kernels, allocator)")
    parser.add_argument("--trainers", default="unpadded,padded,sentence-transformers")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.steps < 2 or args.warmup < 1:
        parser.error("--steps must be >= 2 and --warmup >= 1")
    trainers = [t.strip() for t in args.trainers.split(",") if t.strip()]
    unknown = set(trainers) - {"unpadded", "padded", "sentence-transformers"}
    if unknown or not trainers:
        parser.error(
            f"--trainers: unknown {sorted(unknown)}; choose from unpadded, padded, sentence-transformers"
        )

    import torch

    from biencoder.resolve import BASE_MODEL, resolve_model_path

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: pass --device cpu for a smoke test")
    model = str(resolve_model_path(BASE_MODEL))
    where = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    rows = msmarco_shaped(DATA, BATCH * (args.warmup + args.steps + 1))
    print(f"torch {torch.__version__} on {where}; precision {args.precision}; batch {BATCH}")
    print(f"data: {len(rows['anchor'])} MS MARCO-shaped pairs; {token_stats(model, rows)}", flush=True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-recipe-") as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text(
            "".join(
                json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in zip(*rows.values(), strict=True)
            )
        )
        for name in trainers:
            out = Path(tmp) / name
            if name == "sentence-transformers":
                times = reference(model, rows, args, out)
            else:
                times = ours(model, data, args, out, unpad=name == "unpadded")
            median = statistics.median(times)
            results[name] = {
                "seconds_per_step": median,
                "pairs_per_second": BATCH / median,
                "card_run_hours": median * CARD_STEPS / 3600,
                "timed_steps": len(times),
            }
            print(
                f"{name:>22}: {median * 1000:.1f} ms/step, {BATCH / median:.0f} pairs/s -> the card's "
                f"{CARD_STEPS:,} steps in {median * CARD_STEPS / 3600:.2f} h",
                flush=True,
            )
            if args.device.startswith("cuda"):
                results[name]["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()
    if "sentence-transformers" in results:
        base = results["sentence-transformers"]["seconds_per_step"]
        for name in ("unpadded", "padded"):
            if name in results:
                print(
                    f"{name}: {base / results[name]['seconds_per_step']:.2f}x sentence-transformers' pairs/s"
                )
    if args.json:
        args.json.write_text(
            json.dumps({"device": where, "precision": args.precision, **results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
