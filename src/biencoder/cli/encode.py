"""``biencoder encode``: embed a file of texts into .npy or .parquet."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    from biencoder.loading import add_backend_arguments

    p = sub.add_parser("encode", help="embed a file of texts", description=__doc__)
    p.add_argument(
        "--model", "-m", default="sentence-transformers/all-MiniLM-L6-v2", help="model name or folder"
    )
    p.add_argument(
        "--input", "-i", required=True, help="texts: .txt (one a line), .jsonl, .csv, .tsv or .parquet"
    )
    p.add_argument("--output", "-o", required=True, help="embeddings: .npy or .parquet")
    p.add_argument("--field", "--column", dest="field", help="JSON field or table column (default: text)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-normalize", action="store_true", help="skip the model's Normalize module")
    add_backend_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.data.texts import read_texts, write_embeddings
    from biencoder.loading import encoder_from_args

    texts = read_texts(args.input, args.field)
    model = encoder_from_args(args)
    show = None if logger.isEnabledFor(logging.INFO) else False
    normalize = False if args.no_normalize else None
    stats = getattr(model, "encode_with_stats", None)  # the torch runtime also reports truncation
    if stats is not None:
        result = stats(texts, batch_size=args.batch_size, normalize=normalize, show_progress=show)
        embeddings = result.embeddings
        logger.info(
            "%d of %d inputs were truncated to %d tokens",
            result.num_truncated,
            len(texts),
            getattr(model, "max_seq_length", 0),
        )
    else:
        embeddings = model.encode(texts, batch_size=args.batch_size, normalize=normalize, show_progress=show)
    write_embeddings(args.output, embeddings, texts if args.output.endswith(".parquet") else None)
    logger.info("wrote %d x %d embeddings to %s", *embeddings.shape, args.output)
    return 0
