"""``biencoder evaluate``: score a model on retrieval (BEIR folders), STS files and named tasks.

Prints a table and writes JSON whose keys are the metric names (``ndcg@10``, ``mrr@10``,
``spearman`` ...), under each task's name.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_DATA = "../shared/data"


def register(sub: Any) -> None:
    from biencoder.loading import add_backend_arguments
    from biencoder.resolve import BASE_MODEL

    p = sub.add_parser(
        "evaluate",
        help="evaluate a model: retrieval, STS, classification, clustering, mining",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", "-m", default=BASE_MODEL, help="model name or folder (default: %(default)s)")
    p.add_argument(
        "--ir",
        action="append",
        default=[],
        metavar="DIR",
        help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); repeatable",
    )
    p.add_argument("--split", default="test", help="qrels split of --ir folders (default: test)")
    p.add_argument(
        "--relevance-threshold",
        type=int,
        default=1,
        help="least grade counted relevant by the binary metrics of --ir (TREC DL: 2)",
    )
    p.add_argument(
        "--sts",
        action="append",
        default=[],
        metavar="FILE",
        help="an STS file (STSb layout: score in column 5, sentences in 6 and 7); repeatable",
    )
    p.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME",
        help="a named task resolved in --data: scifact, trec-dl19, stsb, stsb-dev, banking77, "
        "20newsgroups, quora; repeatable",
    )
    p.add_argument("--data", default=DEFAULT_DATA, help="data folder for --task (default: %(default)s)")
    p.add_argument(
        "--limit", type=int, default=None, help="shrink every task to n queries/pairs/texts (quick check)"
    )
    p.add_argument("--output", "-o", help="write the results as JSON here")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    add_backend_arguments(p)
    p.set_defaults(func=run)


def build_evaluators(args: argparse.Namespace, show_progress: bool | None) -> list[Any]:
    from biencoder.evaluation.retrieval import RetrievalEvaluator, subset
    from biencoder.evaluation.sts import StsEvaluator
    from biencoder.evaluation.tasks import TaskOptions, build_tasks

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    evaluators: list[Any] = []
    for folder in args.ir:
        ev = RetrievalEvaluator.from_beir(
            folder,
            args.split,
            relevance_threshold=args.relevance_threshold,
            batch_size=args.batch_size,
            show_progress=show_progress,
        )
        if args.limit is not None:
            ev = subset(ev, ev.query_ids[: args.limit], extra_docs=10 * args.limit)
        evaluators.append(ev)
    for file in args.sts:
        evaluators.append(
            StsEvaluator.from_file(
                file, max_pairs=args.limit, batch_size=args.batch_size, show_progress=show_progress
            )
        )
    if args.task:
        options = TaskOptions(limit=args.limit, batch_size=args.batch_size, show_progress=show_progress)
        evaluators += build_tasks(args.task, args.data, options)
    if not evaluators:
        raise ValueError("nothing to evaluate: give --ir DIR, --sts FILE or --task NAME")
    names = [e.name for e in evaluators]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two evaluations share the name {duplicates[0]!r}; their results would collide")
    return evaluators


def run(args: argparse.Namespace) -> int:
    show = None if logger.isEnabledFor(logging.INFO) else False
    evaluators = build_evaluators(args, show)  # data errors surface before the model loads

    from biencoder.evaluation.report import markdown_table, write_json
    from biencoder.evaluation.suite import evaluate_all
    from biencoder.loading import encoder_from_args

    start = time.perf_counter()
    model = encoder_from_args(args)
    results = evaluate_all(model, evaluators)
    shown = {e.name: list(results[e.name]) for e in evaluators}
    print(markdown_table({str(args.model): results}, shown), end="")
    if args.output:
        payload = {
            "model": str(args.model),
            "results": results,
            "primary_metrics": {e.name: e.primary_metric for e in evaluators},
            "limit": args.limit,
            "seconds": round(time.perf_counter() - start, 1),
        }
        logger.info("wrote %s", write_json(Path(args.output), payload))
    return 0
