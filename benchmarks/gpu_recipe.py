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
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import DATA, msmarco_shaped, ours_round, reference_round, token_stats  # benchmarks/train.py

BATCH = 64
CARD_PAIRS = 532_761
CARD_EPOCHS = 3
CARD_STEPS = math.ceil(CARD_PAIRS / BATCH) * CARD_EPOCHS  # 24,975


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
                bf16 = args.precision != "fp32" and args.device.startswith("cuda")
                times = reference_round(
                    model, rows, args.steps, out, device=args.device, bf16=bf16, warmup=args.warmup
                )
            else:
                times = ours_round(
                    model,
                    str(data),
                    args.steps,
                    out,
                    unpad=name == "unpadded",
                    device=args.device,
                    precision=args.precision,
                    warmup=args.warmup,
                )
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
