"""``biencoder train``: fine-tune a sentence encoder with MultipleNegativesRankingLoss (the card's recipe).

Under ``torchrun --nproc_per_node N -m biencoder train ...`` each process trains on its share of
every global batch, and the loss sees the embeddings of all processes.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="fine-tune a model on (anchor, positive) pairs", description=__doc__)
    p.add_argument(
        "--base",
        "--base-model",
        dest="base_model",
        help="base model name or folder (default: sentence-transformers/all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--data",
        action="append",
        help="training data: a pair file (.jsonl/.csv/.tsv/.parquet), an "
        "MS MARCO file or folder, a BEIR folder, a saved HF dataset; repeat for several (round-robin)",
    )
    p.add_argument(
        "--output", "-o", dest="output_dir", help="output folder (model, README.md card, checkpoints)"
    )
    p.add_argument("--config", help="a TOML file of TrainConfig settings (top level or a [train] table)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-steps", type=int, help="stop after N steps (overrides --epochs)")
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--loss", choices=["mnrl", "cached_mnrl", "gist", "mse", "cosent"])
    p.add_argument(
        "--data-loss",
        action="append",
        metavar="DATASET=LOSS",
        help="one dataset's own loss, by its name (the file's stem or the folder's name), e.g. "
        "sts-train=cosent or quora=mse; the other datasets take --loss (repeatable)",
    )
    p.add_argument(
        "--data-weight",
        action="append",
        metavar="DATASET=WEIGHT",
        help="multiply one dataset's loss, by its name, e.g. quora=2000 (default 1; repeatable)",
    )
    p.add_argument("--teacher", dest="teacher_model", help="mse: the teacher model (default: --base-model)")
    p.add_argument(
        "--teacher-cache", help="mse: folder of cached teacher embeddings (~/.cache/biencoder/teacher)"
    )
    p.add_argument("--mini-batch-size", type=int, help="cached_mnrl: rows per forward pass")
    p.add_argument(
        "--guide", dest="guide_model", help="gist: guide model masking false negatives (same tokenizer)"
    )
    p.add_argument(
        "--batch-sampler",
        type=lambda v: v.replace("-", "_"),
        choices=["batch_sampler", "no_duplicates"],
        help="no-duplicates: no text twice in a batch, in any column (sentence-transformers' NO_DUPLICATES)",
    )
    p.add_argument(
        "--multi-dataset-sampler",
        type=lambda v: v.replace("-", "_"),
        choices=["round_robin", "proportional"],
        help="several --data: round-robin (the card's; stops at the smallest) or proportional "
        "(every batch of every dataset, larger datasets picked more often)",
    )
    p.add_argument("--gist-temperature", type=float, help="gist: cosine / temperature (default 0.01)")
    p.add_argument("--gist-margin-strategy", choices=["absolute", "relative"])
    p.add_argument("--gist-margin", type=float, help="gist: margin below the guide's positive score")
    p.add_argument(
        "--eval-data",
        help="a dev set evaluated during training: a BEIR folder (its --eval-split qrels) or an STS file",
    )
    p.add_argument("--eval-split", help="qrels split of a BEIR --eval-data (default: dev)")
    p.add_argument(
        "--eval-extra-docs",
        type=int,
        help="BEIR --eval-data: its judged documents plus N seeded random others (default: the whole corpus)",
    )
    p.add_argument(
        "--eval-steps",
        type=int,
        help="evaluate every N steps (default: at each epoch's end with --eval-data, and at the end)",
    )
    p.add_argument(
        "--keep-best",
        metavar="METRIC",
        help="save the checkpoint with the best dev METRIC (ndcg@10, spearman ...) instead of the last",
    )
    p.add_argument(
        "--eval-backend",
        choices=["torch", "onnx"],
        help="evaluate with torch (default) or an fp32 ONNX export of the weights (~2x faster on CPU)",
    )
    p.add_argument("--max-seq-length", type=int)
    p.add_argument("--logging-steps", type=int)
    p.add_argument("--save-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="auto (default): bf16 autocast with fp32 master weights on CUDA, fp32 on CPU",
    )
    p.add_argument(
        "--no-unpad",
        dest="unpad",
        action="store_false",
        default=None,
        help="pad each column to the batch's longest text, as sentence-transformers does "
        "(default: length groups padded to their own longest; same loss and gradients, less work)",
    )
    p.add_argument("--skip-invalid", action="store_true", default=None, help="skip malformed rows (counted)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.set_defaults(func=run)


_FIELDS = (
    "base_model",
    "output_dir",
    "epochs",
    "batch_size",
    "max_steps",
    "learning_rate",
    "loss",
    "mini_batch_size",
    "guide_model",
    "teacher_model",
    "teacher_cache",
    "batch_sampler",
    "multi_dataset_sampler",
    "gist_temperature",
    "gist_margin_strategy",
    "gist_margin",
    "eval_data",
    "eval_split",
    "eval_extra_docs",
    "eval_steps",
    "keep_best",
    "eval_backend",
    "max_seq_length",
    "logging_steps",
    "save_steps",
    "seed",
    "device",
    "precision",
    "unpad",
    "skip_invalid",
)


T = TypeVar("T")


def _named_values(
    values: list[str], flag: str, convert: Callable[[str], T | None], expected: str
) -> dict[str, T]:
    """``NAME=VALUE`` pairs, each name given once; ``convert`` returns None for a bad value."""
    out: dict[str, T] = {}
    for value in values:
        name, sep, raw = value.rpartition("=")
        converted = convert(raw) if sep and name and raw else None
        if converted is None:
            raise ValueError(f"{flag} {value!r}: expected {expected}")
        if name in out:
            raise ValueError(f"{flag}: dataset {name!r} is given twice")
        out[name] = converted
    return out


def _positive(raw: str) -> float | None:
    try:
        weight = float(raw)
    except ValueError:
        return None
    return weight if 0 < weight < math.inf else None


def parse_dataset_losses(values: list[str]) -> dict[str, str]:
    """``["sts-train=cosent", ...]`` -> ``{"sts-train": "cosent", ...}``."""
    return _named_values(values, "--data-loss", lambda raw: raw, "DATASET=LOSS, e.g. sts-train=cosent")


def parse_dataset_weights(values: list[str]) -> dict[str, float]:
    """``["quora=2000", ...]`` -> ``{"quora": 2000.0, ...}``."""
    return _named_values(
        values, "--data-weight", _positive, "DATASET=WEIGHT, a positive number, e.g. quora=2000"
    )


def build_config(args: argparse.Namespace) -> Any:
    from biencoder.training import TrainConfig

    overrides = {name: getattr(args, name) for name in _FIELDS if getattr(args, name) is not None}
    if args.data:
        overrides["data"] = tuple(args.data)
    if args.data_loss:
        overrides["dataset_losses"] = parse_dataset_losses(args.data_loss)
    if args.data_weight:
        overrides["dataset_weights"] = parse_dataset_weights(args.data_weight)
    if args.config:
        return TrainConfig.from_toml(args.config, **overrides)
    missing = [flag for flag, key in (("--data", "data"), ("--output", "output_dir")) if key not in overrides]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (or give them in --config)")
    return TrainConfig.from_dict(overrides, "command line")


def run(args: argparse.Namespace) -> int:
    from biencoder.training import train

    config = build_config(args)
    show = None if logging.getLogger("biencoder").isEnabledFor(logging.INFO) else False
    result = train(config, resume=args.resume, show_progress=show)
    tail = result.step_losses[-10:]
    logger.info(
        "trained %d steps in %.1f s (%.1f pairs/s); loss over the last %d steps %.4f; model in %s",
        result.global_step,
        result.seconds,
        result.pairs_per_second,
        len(tail),
        sum(tail) / len(tail) if tail else float("nan"),
        result.output_dir,
    )
    return 0
