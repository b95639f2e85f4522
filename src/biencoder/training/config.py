"""TrainConfig: one frozen dataclass whose defaults are the model card's recipe.

all-MiniLM-L6-v2, MultipleNegativesRankingLoss (scale 20, cosine), batch 64, 3 epochs, AdamW
lr 5e-5 (betas 0.9/0.999, eps 1e-8, no weight decay), linear decay to 0 without warm-up,
gradient norm clipped at 1, seed 42, round-robin across datasets, max_seq_length 256.

Each dataset can have its own loss (``dataset_losses``, by dataset name; the others take ``loss``),
as sentence-transformers' ``loss={"name": ...}``: MNRL for the domain's pairs, MSELoss against the
base model on general text (self-distillation), CoSENTLoss on scored pairs.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOSSES = ("mnrl", "cached_mnrl", "gist", "mse", "cosent")
SCHEDULERS = ("linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
MULTI_DATASET_SAMPLERS = ("round_robin", "proportional")
BATCH_SAMPLERS = ("batch_sampler", "no_duplicates")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    data: tuple[str, ...] = field(
        metadata={"help": "pair files, MS MARCO files/folders, BEIR folders, saved datasets"}
    )
    output_dir: str = field(metadata={"help": "where the trained model, its card and checkpoints go"})
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    epochs: int = 3
    batch_size: int = 64
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = 5e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0  # > 0 overrides warmup_ratio
    max_grad_norm: float = 1.0
    seed: int = 42
    loss: str = "mnrl"
    dataset_losses: dict[str, str] = field(
        default_factory=dict, metadata={"help": "dataset name -> its loss; the others take `loss`"}
    )
    dataset_weights: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "dataset name -> the weight of its loss (default 1, as sentence-transformers)"},
    )
    teacher_model: str | None = None  # mse: whose embeddings are the targets (default: base_model)
    teacher_cache: str | None = None  # mse: where they are kept (default ~/.cache/biencoder/teacher)
    scale: float = 20.0
    similarity: str = "cosine"
    mini_batch_size: int = 32  # cached_mnrl only
    guide_model: str | None = None  # gist: the guide that masks false in-batch negatives
    gist_temperature: float = 0.01  # gist: cosine / temperature (sentence-transformers' default)
    gist_margin_strategy: str = "absolute"  # gist: absolute or relative
    gist_margin: float = 0.0  # gist
    gather_across_devices: bool = True  # distributed only: each anchor sees the global batch
    multi_dataset_sampler: str = "round_robin"  # or proportional: every batch of every dataset
    batch_sampler: str = "batch_sampler"  # or no_duplicates: no text twice in a batch, in any column
    max_seq_length: int = 256
    data_split: str = "train"  # split of BEIR / MS MARCO folders and saved DatasetDicts
    skip_invalid: bool = False  # skip (and count) malformed rows instead of failing
    logging_steps: int = 500
    eval_steps: int | None = None  # None: evaluate at the end only (each epoch's end with eval_data)
    eval_data: str | None = None  # a dev set (BEIR folder or STS file) evaluated during training
    eval_split: str = "dev"  # qrels split of a BEIR eval_data
    eval_extra_docs: int | None = None  # BEIR eval_data: judged documents plus this many others
    keep_best: str | None = None  # a dev metric (ndcg@10 ...): its best checkpoint is the saved model
    eval_backend: str = "torch"  # onnx: evaluators see an fp32 ONNX export of the weights (~2x on CPU)
    save_steps: int = 500
    save_total_limit: int | None = 2
    checkpoint_dir: str | None = None  # default: <output_dir>/checkpoints
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    unpad: bool = True  # each column in length groups padded to their own longest (biencoder.unpad)
    device: str | None = None  # default: cuda when available

    def __post_init__(self) -> None:
        if isinstance(self.data, str | Path):
            object.__setattr__(self, "data", (str(self.data),))
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        if not self.data:
            raise ValueError("data: give at least one training dataset")
        if not str(self.output_dir):
            raise ValueError("output_dir must not be empty")
        positive = (
            "epochs",
            "batch_size",
            "logging_steps",
            "save_steps",
            "max_seq_length",
            "mini_batch_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use epochs) or positive, got {self.max_steps}")
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise ValueError(f"eval_steps must be positive or None, got {self.eval_steps}")
        if self.keep_best is not None and self.eval_data is None:
            raise ValueError("keep_best needs eval_data: the dev set whose metric picks the checkpoint")
        if self.eval_extra_docs is not None and self.eval_extra_docs < 0:
            raise ValueError(f"eval_extra_docs must be >= 0 or None, got {self.eval_extra_docs}")
        if self.save_total_limit is not None and self.save_total_limit <= 0:
            raise ValueError(f"save_total_limit must be positive or None, got {self.save_total_limit}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.adam_epsilon > 0 or self.weight_decay < 0 or not self.max_grad_norm > 0:
            raise ValueError("adam_epsilon and max_grad_norm must be positive and weight_decay >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0 or self.warmup_steps < 0:
            raise ValueError(
                f"warmup_ratio must be in [0, 1) and warmup_steps >= 0, got "
                f"{self.warmup_ratio}, {self.warmup_steps}"
            )
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if not isinstance(self.dataset_losses, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.dataset_losses.items()
        ):
            raise ValueError(
                f"dataset_losses must map dataset names to loss names, got {self.dataset_losses!r}"
            )
        for name, loss in self.dataset_losses.items():
            if loss not in LOSSES:
                raise ValueError(f"dataset_losses[{name!r}] must be one of {LOSSES}, got {loss!r}")
        if not isinstance(self.dataset_weights, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf
            for k, v in self.dataset_weights.items()
        ):
            raise ValueError(
                "dataset_weights must map dataset names to positive finite numbers, "
                f"got {self.dataset_weights!r}"
            )
        if ("gist" in self.losses_used) != (self.guide_model is not None):
            raise ValueError("loss 'gist' needs a guide_model (--guide), and a guide_model needs loss 'gist'")
        if not self.gist_temperature > 0:
            raise ValueError(f"gist_temperature must be positive, got {self.gist_temperature}")
        choices = {
            "loss": LOSSES,
            "lr_scheduler": SCHEDULERS,
            "precision": PRECISIONS,
            "similarity": ("cosine", "dot"),
            "multi_dataset_sampler": MULTI_DATASET_SAMPLERS,
            "batch_sampler": BATCH_SAMPLERS,
            "gist_margin_strategy": ("absolute", "relative"),
            "eval_backend": ("torch", "onnx"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def losses_used(self) -> set[str]:
        """Every loss some dataset may train with: ``loss`` and each of ``dataset_losses``."""
        return {self.loss, *self.dataset_losses.values()}

    def loss_of(self, dataset: str) -> str:
        """The loss that trains the dataset named ``dataset``."""
        return self.dataset_losses.get(dataset, self.loss)

    def weight_of(self, dataset: str) -> float:
        """The factor on the loss of the dataset named ``dataset`` (1: its loss as it is)."""
        return float(self.dataset_weights.get(dataset, 1.0))

    @property
    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.output_dir) / "checkpoints"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"] = list(self.data)
        out["dataset_losses"] = dict(self.dataset_losses)
        out["dataset_weights"] = dict(self.dataset_weights)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
        values = dict(values)
        if "data" in values:
            data = values["data"]
            values["data"] = (data,) if isinstance(data, str) else tuple(data)
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Settings from a TOML file (top level or a [train] table), then ``overrides``."""
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML ({exc})") from None
        if isinstance(values.get("train"), dict):
            values = values["train"]
        given = {k: v for k, v in overrides.items() if v is not None}
        for table in ("dataset_losses", "dataset_weights"):  # flags add to the file's table
            if isinstance(values.get(table), dict) and table in given:
                given[table] = {**values[table], **given[table]}
        values.update(given)
        return cls.from_dict(values, str(path))

    def differences(self) -> dict[str, Any]:
        """Settings that differ from the defaults (the card's recipe)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            if getattr(self, f.name) != default:
                out[f.name] = getattr(self, f.name)
        return out
