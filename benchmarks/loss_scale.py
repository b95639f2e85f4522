"""How hard each loss of a loss-per-dataset run pulls: the gradient norm of one batch of each.

Round-robin training takes one optimizer step per batch, each from one dataset and its loss, and
AdamW divides every step by the running size of the gradients. A loss whose gradients are far
smaller than the others' therefore barely moves the weights. This measures, for a model part-way
from its base (``--model``, e.g. a fine-tune of the card's recipe) and the base as teacher:

- MultipleNegativesRankingLoss on SciFact train pairs (the domain),
- MSELoss against the base's embeddings on Quora questions (self-distillation), at weight 1, as
  sentence-transformers has it,
- CoSENTLoss on STSb train pairs,

each over ``--batches`` batches of 64 (dropout off, so the figures are repeatable), and prints the
mean global gradient norm of each and its ratio to MNRL's.

    .venv/bin/python benchmarks/loss_scale.py --model runs/lv-card-42
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))


def grad_norm(model: torch.nn.Module) -> float:
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def main() -> int:
    from biencoder.data.sources import load_training_data
    from biencoder.encoder import SentenceEncoder
    from biencoder.losses import CoSENTLoss, MSELoss, MultipleNegativesRankingLoss

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="the student: a model part-way from the base")
    parser.add_argument("--base", default="sentence-transformers/all-MiniLM-L6-v2", help="the teacher")
    parser.add_argument("--quora", type=Path, default=None, help="pair file of general text (default: Quora)")
    parser.add_argument("--batches", type=int, default=3)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    student = SentenceEncoder.load(args.model, device="cpu")
    teacher = SentenceEncoder.load(args.base, device="cpu")
    student.eval()  # dropout off: the norms are the same on every run
    rng = random.Random(0)
    scifact = load_training_data(DATA / "scifact")
    sts = load_training_data(DATA / "stsb" / "sts-train.csv")
    quora = [
        line.split("\t")[0]
        for line in (DATA / "quora-duplicates" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    ]
    losses = {
        "mnrl (SciFact)": MultipleNegativesRankingLoss(student, 20.0, "cosine", False),
        "mse (Quora, teacher = base)": MSELoss(student),
        "cosent (STSb train)": CoSENTLoss(student, 20.0),
    }
    norms: dict[str, list[float]] = {k: [] for k in losses}
    values: dict[str, list[float]] = {k: [] for k in losses}
    for _ in range(args.batches):
        for name, loss in losses.items():
            student.zero_grad(set_to_none=True)
            if name.startswith("mnrl"):
                rows = rng.sample(range(len(scifact)), 64)
                cols = [[scifact.anchors[r] for r in rows], [scifact.positives[r] for r in rows]]
                value = loss([student.tokenize(c) for c in cols])
            elif name.startswith("mse"):
                texts = rng.sample(quora, 64)
                target = torch.from_numpy(teacher.encode(texts, batch_size=64, show_progress=False))
                value = loss([student.tokenize(texts)], target)
            else:
                rows = rng.sample(range(len(sts)), 64)
                cols = [[sts.anchors[r] for r in rows], [sts.positives[r] for r in rows]]
                assert sts.scores is not None
                scores = torch.tensor([sts.scores[r] for r in rows], dtype=torch.float32)
                value = loss([student.tokenize(c) for c in cols], scores)
            value.backward()
            norms[name].append(grad_norm(student))
            values[name].append(value.item())
    ref = sum(norms["mnrl (SciFact)"]) / args.batches
    out = {}
    print("| loss | value | gradient norm | ratio to MNRL |\n|---|---:|---:|---:|")
    for name in losses:
        norm = sum(norms[name]) / args.batches
        value = sum(values[name]) / args.batches
        out[name] = {"value": value, "grad_norm": norm, "ratio": norm / ref}
        print(f"| {name} | {value:.3g} | {norm:.3g} | {norm / ref:.2g} |")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
