"""Training throughput: our trainer (unpadded and padded) against sentence-transformers'
SentenceTransformerTrainer, in one run, on two kinds of data.

All fine-tune all-MiniLM-L6-v2 with the card's settings: MultipleNegativesRankingLoss (scale 20,
cosine), batch 64, AdamW lr 5e-5, max_seq_length 256, dropout on. The data:

- ``msmarco``: MS MARCO-shaped pairs: the real questions of ``trec-dl19-mini`` and of the MS MARCO
  triples sample, each against a real MS MARCO passage of ``trec-dl19-mini`` (the token
  statistics are printed beside the card's: queries 8.9 mean / 34 max, passages 79.9 / 197);
- ``scifact``: SciFact's 919 train (query, abstract) pairs, whose abstracts mostly fill the 256
  tokens: little padding to remove.

Rounds are interleaved (unpadded, padded, reference, unpadded, ...); each runs ``--steps``
optimizer steps of a trainer and times the intervals between consecutive step ends (collation,
forward, backward, clipping and the optimizer step: everything a step costs; setup and saving
are not timed). Medians over all intervals; a ratio > 1 means we are faster.

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/train.py [--data msmarco,scifact]
        [--rounds 2] [--steps 6]
"""

from __future__ import annotations

import argparse
import itertools
import json
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
CARD = {"anchor": (8.9, 34), "positive": (79.9, 197)}  # the card's token statistics: mean, max


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def ours_round(
    model: str,
    data: str,
    steps: int,
    out: Path,
    unpad: bool,
    *,
    device: str = "cpu",
    precision: str = "auto",
    warmup: int = 0,
) -> list[float]:
    """Step-to-step intervals (seconds) of our trainer over ``steps`` steps after ``warmup`` untimed ones."""
    from biencoder.training import TrainConfig, train

    ends: list[float] = []

    def on_step(step: int, loss: float) -> None:  # the loss was read: the step has finished
        if step >= warmup:
            _sync(device)
            ends.append(time.perf_counter())

    config = TrainConfig(
        data=(data,),
        output_dir=str(out),
        base_model=model,
        batch_size=BATCH,
        max_steps=warmup + steps,
        save_steps=1_000_000,
        save_total_limit=1,
        precision=precision,
        unpad=unpad,
        device=device,
    )
    train(config, show_progress=False, on_step=on_step)
    return [b - a for a, b in itertools.pairwise(ends)]


def reference_round(
    model: str,
    rows: dict[str, list[str]],
    steps: int,
    out: Path,
    *,
    device: str = "cpu",
    bf16: bool = False,
    warmup: int = 0,
) -> list[float]:
    """Step-to-step intervals (seconds) of SentenceTransformerTrainer over ``steps`` steps after
    ``warmup`` untimed ones."""
    import sentence_transformers as st
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    ends: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= warmup:
                _sync(device)
                ends.append(time.perf_counter())

    encoder = st.SentenceTransformer(model, device=device)
    encoder.max_seq_length = 256
    args = st.SentenceTransformerTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=warmup + steps,
        learning_rate=5e-5,
        seed=42,
        bf16=bf16,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        logging_steps=1_000_000,
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


def msmarco_shaped(data: Path, n: int) -> dict[str, list[str]]:
    """``n`` (question, passage) pairs: real MS MARCO questions cycled against distinct real passages."""
    import csv

    from biencoder.data.beir import load_corpus, load_queries

    questions = list(load_queries(data / "trec-dl19-mini" / "queries.jsonl").values())
    with (data / "msmarco-triples-sample" / "triplets_raw.tsv").open(encoding="utf-8", newline="") as f:
        questions += [r[0] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    passages = list(load_corpus(data / "trec-dl19-mini" / "corpus.jsonl").values())[:n]
    return {"anchor": [questions[i % len(questions)] for i in range(len(passages))], "positive": passages}


def token_stats(model: str, rows: dict[str, list[str]]) -> str:
    from biencoder.encoder import SentenceEncoder

    transformer = SentenceEncoder.load(model, device="cpu").transformer
    transformer.max_seq_length = 256
    parts = []
    for column, texts in rows.items():
        lengths = [len(x) for x in transformer.tokenize_unpadded(texts).ids]
        card = CARD.get(column)
        parts.append(
            f"{column} {statistics.fmean(lengths):.1f} mean / {max(lengths)} max tokens"
            + (f" (card: {card[0]} / {card[1]})" if card else "")
        )
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="msmarco,scifact", help="msmarco, scifact or both")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per trainer per round")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (intervals between step ends are timed)")
    kinds = [k.strip() for k in args.data.split(",") if k.strip()]
    if not kinds or set(kinds) - {"msmarco", "scifact"}:
        parser.error(f"--data: msmarco, scifact or both, got {args.data!r}")

    import torch

    from biencoder.data.sources import read_beir_pairs
    from biencoder.resolve import BASE_MODEL, resolve_model_path

    model = str(resolve_model_path(BASE_MODEL))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {BATCH}; "
        f"{args.rounds} interleaved rounds x {args.steps} steps per trainer"
    )
    summary = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for kind in kinds:
            if kind == "scifact":
                pairs = read_beir_pairs(DATA / "scifact", "train")
                rows = {"anchor": pairs.anchors, "positive": pairs.positives}
            else:
                rows = msmarco_shaped(DATA, BATCH * args.steps * 4)
            data_file = Path(tmp) / f"{kind}.jsonl"
            data_file.write_text(
                "".join(
                    json.dumps({"anchor": a, "positive": p}) + "\n"
                    for a, p in zip(*rows.values(), strict=True)
                )
            )
            print(f"\n{kind}: {len(rows['anchor'])} pairs; {token_stats(model, rows)}", flush=True)
            times: dict[str, list[float]] = {"unpadded": [], "padded": [], "sentence-transformers": []}
            for r in range(args.rounds):
                medians: dict[str, float] = {}
                for name in times:
                    out = Path(tmp) / f"{name}-{kind}-{r}"
                    if name == "sentence-transformers":
                        got = reference_round(model, rows, args.steps, out)
                    else:
                        got = ours_round(model, str(data_file), args.steps, out, unpad=name == "unpadded")
                    times[name] += got
                    medians[name] = statistics.median(got)
                print(
                    f"round {r + 1}: " + ", ".join(f"{n} {m:.2f} s/step" for n, m in medians.items()),
                    flush=True,
                )
            medians = {name: statistics.median(t) for name, t in times.items()}
            for name, median in medians.items():
                print(
                    f"{name:>22}: median {median:.3f} s/step = {BATCH / median:.1f} pairs/s "
                    f"over {len(times[name])} steps"
                )
            reference = medians["sentence-transformers"]
            line = (
                f"{kind}: unpadded {reference / medians['unpadded']:.2f}x, "
                f"padded {reference / medians['padded']:.2f}x sentence-transformers' pairs/s; "
                f"unpadded / padded {medians['padded'] / medians['unpadded']:.2f}x"
            )
            print(line)
            summary.append(line)
    print("\n" + "\n".join(summary))
    print("targets: msmarco unpadded >= 2.0x, scifact unpadded >= 1.5x")


if __name__ == "__main__":
    main()
