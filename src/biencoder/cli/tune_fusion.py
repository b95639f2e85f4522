"""``biencoder tune-fusion``: choose hybrid search's dense weight (alpha) for an index, by k-fold
cross-validation over judged queries, and record it in the index folder (``fusion.json``).

Each query's dense and lexical candidate lists are computed once; for every alpha of the grid
they are fused as ``Index.search`` fuses them (convex fusion), giving a [queries, alphas] matrix
of the metric. Each fold's alpha is picked on the other folds and scored on the held-out one; the
mean of those held-out scores is the cross-validated estimate. The recorded alpha is the best on
all the split's queries, and hybrid search on the index uses it from then on.

Tune on queries the model did NOT train on. A model fine-tuned on SciFact's train claims ranks
those very claims unusually well, so tuning on them overrates the dense side and picks an alpha
too close to 1 for new queries: use a held-out or dev split (or the train split of a model that
never saw it). The test split is never read to choose anything: ``--split test`` is refused
unless ``--allow-test`` says so on purpose.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from biencoder.evaluation.fusion_cv import CrossValidation
    from biencoder.index import Index

logger = logging.getLogger(__name__)

DEFAULT_GRID = "0,0.1,...,1"
DEFAULT_DATA_ROOT = "../shared/data"
TEST_REFUSED = (
    "the test split is never read to choose anything: an alpha picked on test queries makes their "
    "score an overestimate. Tune on train or dev queries the model did not train on, or pass "
    "--allow-test to do it anyway"
)


def register(sub: Any) -> None:
    from biencoder.loading import add_backend_arguments

    p = sub.add_parser(
        "tune-fusion",
        help="pick hybrid search's dense weight for an index by cross-validation; record it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--index", "-i", required=True, help="index folder (memory backend, with a lexical part)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", help="a BEIR folder (queries.jsonl, qrels/<split>.tsv) whose corpus the index holds"
    )
    source.add_argument(
        "--task",
        help="a named retrieval task instead (wikiqa-dev ...), read from --data-root; the index must "
        "hold that task's corpus under the same ids",
    )
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="data folder of --task (%(default)s)")
    p.add_argument(
        "--split",
        default="train",
        help="qrels split of --data: queries the model did NOT train on (default: %(default)s)",
    )
    p.add_argument("--allow-test", action="store_true", help="allow tuning on the test split (not advised)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: %(default)s)")
    p.add_argument("--grid", default=DEFAULT_GRID, help="alphas to try: a list, or a run 'a,b,...,z'")
    p.add_argument("--fusion", default="convex", help="convex (the only one with a weight to tune)")
    p.add_argument(
        "--normalization", default="minmax", help="minmax, zscore or calibrated (default: %(default)s)"
    )
    p.add_argument("--metric", default="ndcg@10", help="per-query metric to maximise (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="seed of the fold assignment")
    p.add_argument(
        "--candidates",
        type=int,
        default=1000,
        help="each side's list length before fusion (at least 100, the depth the metrics read)",
    )
    p.add_argument(
        "--relevance-threshold", type=int, default=1, help="least grade counted relevant (TREC DL: 2)"
    )
    p.add_argument("--model", "-m", help="query encoder (default: the model the index was built with)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    add_backend_arguments(p)
    p.set_defaults(func=run)


def _check_arguments(args: argparse.Namespace) -> tuple[float, ...]:
    """Every choice checked before anything is read; returns the grid."""
    from biencoder.evaluation.fusion_cv import parse_grid
    from biencoder.evaluation.metrics import metric_names
    from biencoder.index.fusion import Fusion, ScoreNormalization

    if Fusion.parse(args.fusion) is not Fusion.CONVEX:
        raise ValueError(
            f"{args.fusion} fusion has no weight to tune; tune-fusion tunes convex fusion's alpha"
        )
    ScoreNormalization.parse(args.normalization)
    if args.metric not in metric_names():
        raise ValueError(f"unknown metric {args.metric!r}; valid: {', '.join(metric_names())}")
    for name in ("folds", "candidates", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.folds < 2:
        raise ValueError(f"--folds must be at least 2, got {args.folds}")
    return parse_grid(args.grid)


def _read_queries(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict[str, int]], str, str]:
    """(query texts, qrels, split, data label) of the split to tune on; the test split is refused."""
    from biencoder.data.beir import load_qrels, load_queries

    if args.task is not None:
        from biencoder.evaluation.tasks import resolve_task, retrieval_data

        split = resolve_task(args.task).split or "test"
        if split == "test" and not args.allow_test:
            raise ValueError(f"task {args.task} reads a test split; {TEST_REFUSED}")
        data, task = retrieval_data(args.task, args.data_root)
        return dict(data.queries), data.qrels, split, task.name
    if args.split == "test" and not args.allow_test:
        raise ValueError(f"--split test: {TEST_REFUSED}")
    folder = Path(args.data)
    qrels = load_qrels(folder / "qrels" / f"{args.split}.tsv")
    queries = load_queries(folder / "queries.jsonl")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise ValueError(f"{folder}: qrels name {len(missing)} unknown queries, e.g. {missing[0]!r}")
    return queries, qrels, args.split, str(folder)


def _open_index(args: argparse.Namespace) -> Index:
    """The index with its query encoder; a clear error for a database store or no lexical part."""
    from biencoder.index import Index
    from biencoder.index.hybrid import NO_LEXICAL_PART
    from biencoder.loading import encoder_from_args
    from biencoder.stores import backend_of, model_name_of

    path = Path(args.index)
    backend = backend_of(path)
    if backend != "memory":
        raise ValueError(
            f"{path} is a {backend} store; tune-fusion needs an in-process (memory) index with a "
            f"lexical part: {NO_LEXICAL_PART}"
        )
    model = args.model or model_name_of(path)
    if not model:
        raise ValueError(f"{path}: the index records no model; pass --model")
    index = Index.load(path, encoder=encoder_from_args(args, model))
    if not index.has_lexical:
        raise ValueError(f"{path}: {NO_LEXICAL_PART}")
    return index


def run(args: argparse.Namespace) -> int:
    from biencoder.evaluation import metrics
    from biencoder.evaluation.fusion_cv import cross_validate
    from biencoder.evaluation.hybrid import RANK_DEPTH, Candidates, alpha_scores
    from biencoder.index.config import FusionRecord
    from biencoder.index.fusion import ScoreNormalization
    from biencoder.index.persist import write_fusion_record

    grid = _check_arguments(args)
    queries, qrels, split, label = _read_queries(args)
    index = _open_index(args)
    live = set(index.ids)
    judged = [q for q in qrels if metrics.has_relevant(qrels[q], args.relevance_threshold)]
    reachable = [q for q in judged if any(d in live for d in qrels[q])]
    if not reachable:
        raise ValueError(
            f"no judged document of {label} ({split}) is in the index {args.index}: "
            "build the index from that data's corpus"
        )
    if len(reachable) < len(judged):
        logger.warning(
            "%d of %d judged queries have no judged document in the index",
            len(judged) - len(reachable),
            len(judged),
        )
    texts = [queries[q] for q in judged]
    fetch = max(args.candidates, RANK_DEPTH)
    logger.info("searching %d queries, dense and lexical, %d candidates each", len(texts), fetch)
    dense = index.search(texts, fetch, mode="dense", batch_size=args.batch_size)
    lexical = index.search(texts, fetch, mode="lexical")
    calibrated = ScoreNormalization.parse(args.normalization) is ScoreNormalization.CALIBRATED
    scales = index.lexical_scales(texts) if calibrated else None
    candidates = Candidates.from_results(dense, lexical, index.ids, scales)
    scores = alpha_scores(
        candidates,
        [qrels[q] for q in judged],
        grid,
        metric=args.metric,
        normalization=ScoreNormalization.parse(args.normalization),
        threshold=args.relevance_threshold,
    )
    cv = cross_validate(scores, grid, folds=args.folds, seed=args.seed)
    _print_report(cv, args.metric, len(judged), split, label)
    record = FusionRecord(
        alpha=cv.alpha,
        fusion="convex",
        normalization=args.normalization,
        grid=cv.grid,
        split=split,
        folds=args.folds,
        data=label,
        cv_score=cv.cv_score,
    )
    write_fusion_record(args.index, record)
    print(f"recorded alpha {cv.alpha:g} in {Path(args.index) / 'fusion.json'}")
    return 0


def _print_report(cv: CrossValidation, metric: str, n_queries: int, split: str, label: str) -> None:
    print(f"{metric} of convex fusion on {n_queries} {split} queries of {label}")
    print("alpha (dense weight) -> mean over all queries:")
    sides = {0.0: "  (~BM25 only)", 1.0: "  (~dense only)"}
    for alpha, mean in zip(cv.grid, cv.means, strict=True):
        print(f"  {alpha:5.2f}  {mean:.4f}{sides.get(alpha, '')}{'  <- picked' if alpha == cv.alpha else ''}")
    print(f"{len(cv.folds)}-fold cross-validation (alpha picked on the other folds):")
    for f in cv.folds:
        print(
            f"  fold {f.fold}: alpha {f.alpha:.2f} ({f.train_score:.4f} on {f.train_queries} queries), "
            f"held out {f.test_score:.4f} on {f.test_queries} queries"
        )
    print(f"cross-validated {metric}: {cv.cv_score:.4f}")
    print(f"final alpha (best on all {n_queries} queries): {cv.alpha:g}")
