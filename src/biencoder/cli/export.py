"""``biencoder export``: write onnx/model.onnx (and the int8 graph) into a model folder."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32, optionally int8)", description=__doc__)
    p.add_argument(
        "--model", "-m", default="sentence-transformers/all-MiniLM-L6-v2", help="model name or folder"
    )
    p.add_argument(
        "--output", "-o", help="save a copy of the model here and export into it (default: in place)"
    )
    p.add_argument("--quantize", choices=["int8"], help="also write onnx/model_qint8.onnx")
    p.add_argument(
        "--calibration",
        help="texts to measure fidelity on (.txt/.jsonl/.csv/.tsv/.parquet); "
        "default: the sentences of the model folder's README.md",
    )
    p.add_argument("--field", help="JSON field or table column of --calibration (default: text)")
    p.add_argument("--max-texts", type=int, default=512, help="calibration texts used at most")
    p.add_argument("--min-mean-cosine", type=float, default=0.995, help="int8: refuse below this mean cosine")
    p.add_argument("--min-cosine", type=float, default=0.98, help="int8: refuse below this minimum cosine")
    p.add_argument("--force", action="store_true", help="write the int8 graph even below the thresholds")
    p.add_argument(
        "--no-optimize", action="store_true", help="skip BERT fusion (attention, layer norm, GELU)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.resolve import resolve_model_path
    from biencoder.runtime.export import ExportConfig, export, readme_sentences

    if args.max_texts < 8:
        raise ValueError(f"--max-texts must be at least 8, got {args.max_texts}")
    if args.calibration:
        from biencoder.data.texts import read_texts

        texts = read_texts(args.calibration, args.field)[: args.max_texts]
    else:
        texts = readme_sentences(resolve_model_path(args.model), args.max_texts)
        logger.warning(
            "no --calibration given: measuring fidelity on %d sentences of the model card; "
            "pass texts of your domain for a meaningful figure",
            len(texts),
        )
    config = ExportConfig(
        quantize=args.quantize,
        optimize=not args.no_optimize,
        min_mean_cosine_int8=args.min_mean_cosine,
        min_cosine_int8=args.min_cosine,
        force=args.force,
    )
    result = export(args.model, texts, config, output=args.output)
    for precision, fid in result.fidelity.items():
        print(
            f"{precision}: {result.files[precision]}  cosine to torch fp32 over {fid.n} texts: "
            f"mean {fid.mean:.6f}, min {fid.min:.6f}"
        )
    return 0
