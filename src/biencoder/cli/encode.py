"""``biencoder encode``: embed a file of texts into .npy or .parquet."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.data.texts import read_texts, write_embeddings
    from biencoder.encoder import SentenceEncoder

    texts = read_texts(args.input, args.field)
    model = SentenceEncoder.load(args.model, device=args.device)
    show = None if logger.isEnabledFor(logging.INFO) else False
    result = model.encode_with_stats(
        texts, batch_size=args.batch_size, normalize=False if args.no_normalize else None, show_progress=show
    )
    write_embeddings(args.output, result.embeddings, texts if args.output.endswith(".parquet") else None)
    logger.info(
        "wrote %d x %d embeddings to %s; %d of %d inputs were truncated to %d tokens",
        *result.embeddings.shape,
        args.output,
        result.num_truncated,
        len(texts),
        model.max_seq_length,
    )
    return 0
