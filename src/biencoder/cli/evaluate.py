"""``biencoder evaluate``: score a model on retrieval (BEIR folders), STS files and named tasks.

Prints a table and writes JSON whose keys are the metric names (``ndcg@10``, ``mrr@10``,
``spearman`` ...), under each task's name. ``--retrieval dense,lexical,hybrid`` scores the
retrieval tasks in several modes, each under its own name: ``scifact`` (dense), ``scifact-bm25``
(lexical: BM25, no model) and ``scifact-hybrid`` (both fused as hybrid search fuses them, by
``--fusion`` and ``--alpha``); the JSON's ``retrieval`` entry records the modes and the fusion.
The corpus is encoded once for dense and hybrid; ``--retrieval lexical`` alone loads no model.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biencoder.evaluation.base import Evaluator
    from biencoder.evaluation.hybrid import FusionSettings
    from biencoder.index.fusion import SearchMode
    from biencoder.protocol import Encoder

logger = logging.getLogger(__name__)

DEFAULT_DATA = "../shared/data"


def register(sub: Any) -> None:
    from biencoder.index.fusion import DEFAULT_ALPHA
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
        help="a named task resolved in --data: scifact, trec-dl19, wikiqa, wikiqa-dev, stsb, stsb-dev, "
        "banking77, 20newsgroups, quora; repeatable",
    )
    p.add_argument(
        "--retrieval",
        default="dense",
        metavar="MODES",
        help="retrieval modes, comma-separated: dense, lexical (BM25), hybrid (default: dense)",
    )
    p.add_argument("--fusion", default="convex", help="hybrid: convex or rrf (default: convex)")
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help=f"hybrid, convex: the dense weight in [0, 1] (default: {DEFAULT_ALPHA})",
    )
    p.add_argument(
        "--normalization",
        default=None,
        help="hybrid, convex: minmax, zscore or calibrated (default: the untuned search default, "
        "calibrated and adaptive; see docs/search.md)",
    )
    p.add_argument("--candidates", type=int, default=1000, help="hybrid: each side's list length")
    p.add_argument("--data", default=DEFAULT_DATA, help="data folder for --task (default: %(default)s)")
    p.add_argument(
        "--limit", type=int, default=None, help="shrink every task to n queries/pairs/texts (quick check)"
    )
    p.add_argument("--output", "-o", help="write the results as JSON here")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    add_backend_arguments(p)
    p.set_defaults(func=run)


def build_evaluators(args: argparse.Namespace, show_progress: bool | None) -> list[Evaluator]:
    from biencoder.evaluation.retrieval import RetrievalEvaluator, subset
    from biencoder.evaluation.sts import StsEvaluator
    from biencoder.evaluation.tasks import TaskOptions, build_tasks

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    evaluators: list[Evaluator] = []
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


def _result_names(evaluators: list[Evaluator], modes: tuple[SearchMode, ...]) -> dict[str, Evaluator]:
    """Each result name and the evaluator behind it; two results of one name are refused."""
    from biencoder.evaluation.hybrid import result_name
    from biencoder.evaluation.retrieval import RetrievalEvaluator

    names: dict[str, Evaluator] = {}
    for ev in evaluators:
        own = [result_name(ev.name, m) for m in modes] if isinstance(ev, RetrievalEvaluator) else [ev.name]
        for name in own:
            if name in names:
                raise ValueError(f"two evaluations share the name {name!r}; their results would collide")
            names[name] = ev
    return names


def evaluate(
    model: Encoder | None, evaluators: list[Evaluator], modes: tuple[SearchMode, ...], fusion: FusionSettings
) -> dict[str, dict[str, float]]:
    """Each result's metrics: retrieval evaluators in every mode (one encoding), the others as usual."""
    from biencoder.evaluation.retrieval import RetrievalEvaluator

    results: dict[str, dict[str, float]] = {}
    for number, ev in enumerate(evaluators, start=1):
        start = time.perf_counter()
        logger.info("[%d/%d] evaluating %s", number, len(evaluators), ev.name)
        if isinstance(ev, RetrievalEvaluator):
            results.update(ev.evaluate_modes(model, modes, fusion))
        elif model is None:
            raise ValueError(f"{ev.name} needs a model")
        else:
            results[ev.name] = {k: float(v) for k, v in ev(model).items()}
        logger.info("%s: %.0f s", ev.name, time.perf_counter() - start)
    return results


def run(args: argparse.Namespace) -> int:
    from biencoder.evaluation.hybrid import FusionSettings, needs_encoder, parse_modes
    from biencoder.evaluation.retrieval import RetrievalEvaluator
    from biencoder.index.fusion import SearchMode

    modes = parse_modes(args.retrieval)
    fusion = FusionSettings(
        fusion=args.fusion, alpha=args.alpha, normalization=args.normalization, candidates=args.candidates
    )
    if SearchMode.HYBRID not in modes and (args.alpha is not None or args.fusion != "convex"):
        logger.warning("--fusion and --alpha apply to hybrid retrieval, which --retrieval does not ask for")
    show = None if logger.isEnabledFor(logging.INFO) else False
    evaluators = build_evaluators(args, show)  # data errors surface before the model loads
    names = _result_names(evaluators, modes)

    from biencoder.evaluation.report import markdown_table, write_json
    from biencoder.loading import encoder_from_args

    start = time.perf_counter()
    use_model = needs_encoder(modes) or any(not isinstance(e, RetrievalEvaluator) for e in evaluators)
    model = encoder_from_args(args) if use_model else None
    results = evaluate(model, evaluators, modes, fusion)
    label = str(args.model) if use_model else "bm25"
    print(markdown_table({label: results}, {n: list(results[n]) for n in names}), end="")
    if args.output:
        payload = {
            "model": str(args.model) if use_model else None,
            "results": results,
            "primary_metrics": {n: ev.primary_metric for n, ev in names.items()},
            "retrieval": {
                "modes": [m.value for m in modes],
                **(fusion.to_dict() if SearchMode.HYBRID in modes else {}),
            },
            "limit": args.limit,
            "seconds": round(time.perf_counter() - start, 1),
        }
        logger.info("wrote %s", write_json(Path(args.output), payload))
    return 0
