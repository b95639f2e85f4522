"""``biencoder mine``: hard negatives for (anchor, positive) pairs, as rows ``biencoder train`` reads.

From a pair file (the corpus: --corpus, else the positives) or a BEIR folder (the corpus: its
whole corpus; every relevant document of a query, not only the row's, is excluded). The options
mean what they mean in sentence-transformers' ``mine_hard_negatives``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from biencoder.loading import add_backend_arguments

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("mine", help="mine hard negatives for training pairs", description=__doc__)
    p.add_argument(
        "--model", "-m", default="sentence-transformers/all-MiniLM-L6-v2", help="model name or folder"
    )
    p.add_argument("--data", required=True, help="a pair file (.jsonl/.csv/.tsv/.parquet) or a BEIR folder")
    p.add_argument(
        "--split", default="train", help="BEIR folder: the qrels split of the pairs (default: train)"
    )
    p.add_argument("--corpus", help="texts to mine from: .txt (one a line) or a BEIR corpus.jsonl")
    p.add_argument("--output", "-o", required=True, help="output .jsonl or .parquet")
    p.add_argument("--num-negatives", type=int, default=3)
    p.add_argument("--range-min", type=int, default=0, help="skip the nearest N candidates")
    p.add_argument("--range-max", type=int, help="consider candidates up to this rank")
    p.add_argument("--min-score", type=float)
    p.add_argument("--max-score", type=float)
    p.add_argument("--absolute-margin", type=float, help="negatives score at least this below the positive")
    p.add_argument("--relative-margin", type=float, help="negatives score at most (1 - m) x the positive")
    p.add_argument("--sampling-strategy", choices=["top", "random"], default="top")
    p.add_argument("--output-format", choices=["triplet", "n-tuple"], default="triplet")
    p.add_argument("--seed", type=int, default=42, help="random sampling")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--index",
        choices=["exact", "hnsw"],
        default="exact",
        help="candidate search: exact, or approximate HNSW for large corpora (default: exact)",
    )
    p.add_argument(
        "--bm25",
        type=int,
        default=0,
        metavar="N",
        help="add each query's N best BM25 texts to the candidates, ranked by rank fusion (needs bm25s)",
    )
    p.add_argument("--device", default=None)
    add_backend_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.data.rows import read_mining_input, write_rows
    from biencoder.loading import encoder_from_args
    from biencoder.training.mining import MiningConfig, mine_hard_negatives

    config = MiningConfig(
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        min_score=args.min_score,
        max_score=args.max_score,
        absolute_margin=args.absolute_margin,
        relative_margin=args.relative_margin,
        sampling_strategy=args.sampling_strategy,
        output_format=args.output_format,
        seed=args.seed,
        batch_size=args.batch_size,
        index=args.index,
        bm25_candidates=args.bm25,
    )
    anchors, positives, corpus, known = read_mining_input(Path(args.data), args.split, args.corpus)
    mined = mine_hard_negatives(encoder_from_args(args), anchors, positives, corpus, config, known)
    write_rows(Path(args.output), mined.columns, mined.rows)
    print(f"{len(mined.rows)} rows ({', '.join(mined.columns)}) -> {args.output}")
    return 0
