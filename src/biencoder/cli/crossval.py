"""``biencoder cv``: compare training settings by k-fold cross-validation over a BEIR folder's
train queries (``biencoder.training.crossval``).

Each ``--setting`` is the model card's recipe with some training fields changed, written
``NAME[:field=value,...]`` (``TrainConfig``'s field names; ``eval_max_seq_length`` sets the
document length read at evaluation, ``merge_alpha`` merges each fold's fine-tune with the base
before it is evaluated, ``extra_data=PATH`` (repeatable) trains a source beside each fold's pairs,
round-robin, and ``dataset_losses={"NAME":"LOSS"}`` gives one of them its own loss). With
``--general-dev`` (an STS file outside the domain, such as STSb's dev split) every fold model is
also scored there, so that a gain in the domain is not bought with a loss outside it. For example

    biencoder cv --data ../shared/data/scifact --folds 3 --extra-docs 2000 \\
        --setting card --setting card-eval512:eval_max_seq_length=512 \\
        --setting len512:max_seq_length=512 \\
        --setting quora-mse:extra_data=quora.jsonl,dataset_losses={"quora":"mse"}

prints each setting's held-out nDCG@10 over every train query and its paired test against the
first setting, and writes them (with every query's score) to ``OUTPUT/cv.json``. A run that was
interrupted resumes from the folds already scored.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from biencoder.resolve import BASE_MODEL


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cv",
        help="compare training settings by k-fold cross-validation over train queries",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--output", "-o", required=True, help="folds, per-fold scores and cv.json go here")
    p.add_argument(
        "--setting",
        action="append",
        required=True,
        help="NAME[:field=value,...], repeatable; the first is the baseline of the paired tests",
    )
    p.add_argument("--model", default=BASE_MODEL, help="the base model (default: %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default: %(default)s)")
    p.add_argument("--fold-seed", type=int, default=0, help="seed of the cut into folds (default: 0)")
    p.add_argument("--seed", type=int, default=42, help="training seed (default: %(default)s)")
    p.add_argument("--split", default="train", help="the qrels split cut into folds (default: train)")
    p.add_argument(
        "--extra-docs",
        type=int,
        default=None,
        help="held-out corpus: each fold's judged documents and n random others (default: the whole corpus)",
    )
    p.add_argument(
        "--general-dev", help="an STS file (.csv/.tsv) outside the domain, scored by every fold model too"
    )
    p.add_argument("--eval-backend", choices=["onnx", "torch"], default="onnx", help="evaluation runtime")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    p.set_defaults(func=run)


def parse_setting(text: str) -> Any:
    """``NAME[:field=value,...]`` as a Setting; values are JSON (numbers, true, "strings") or bare text."""
    from biencoder.training.crossval import Setting

    name, _, rest = text.partition(":")
    fields: dict[str, Any] = {}
    extra: list[str] = []
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--setting {text!r}: expected field=value, got {item!r}")
        if key.strip() == "extra_data":
            extra.append(raw.strip())
            continue
        try:
            fields[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            fields[key.strip()] = raw.strip()
    eval_length = fields.pop("eval_max_seq_length", None)
    if eval_length is not None and not isinstance(eval_length, int):
        raise ValueError(f"--setting {text!r}: eval_max_seq_length must be an integer, got {eval_length!r}")
    alpha = fields.pop("merge_alpha", None)
    if alpha is not None and not isinstance(alpha, int | float):
        raise ValueError(f"--setting {text!r}: merge_alpha must be a number in [0, 1], got {alpha!r}")
    _check_fields(text, fields)
    return Setting(
        name=name.strip(),
        train=fields,
        eval_max_seq_length=eval_length,
        merge_alpha=None if alpha is None else float(alpha),
        extra_data=tuple(extra),
    )


def _check_fields(text: str, fields: dict[str, Any]) -> None:
    import dataclasses

    from biencoder.training.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(
            f"--setting {text!r}: unknown training field(s) {', '.join(unknown)}; "
            f"known: eval_max_seq_length, merge_alpha, {', '.join(sorted(known))}"
        )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from biencoder.training.crossval import CrossValidation, choose, cross_validate, markdown_table

    settings = [parse_setting(s) for s in args.setting]
    cv = CrossValidation(
        folds=args.folds,
        fold_seed=args.fold_seed,
        seed=args.seed,
        extra_docs=args.extra_docs,
        eval_backend=args.eval_backend,
        split=args.split,
        general_dev=args.general_dev,
    )
    results = cross_validate(
        settings, Path(args.data), Path(args.output), cv, base_model=args.model, device=args.device
    )
    print("\n".join(markdown_table(results, settings[0].name)))
    print(f"chosen: {choose(results, settings[0].name)}")
    return 0
