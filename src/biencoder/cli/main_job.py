"""``biencoder main``: fine-tune all-MiniLM-L6-v2 on SciFact with the card's recipe and with an
improved recipe on the same data, then show both against the base model.

Steps: evaluate the base model on SciFact test, TREC DL19 (mini) and STSb test (cached between
runs, keyed by the model's and the data's contents); the card arm fine-tunes on SciFact's train
pairs with the model card's recipe (evaluated at the end of training, so its card carries the
results) into ``model/``; the improved arm (``biencoder.training.recipe``: a dev split by query,
mined hard negatives, no-duplicate batches, the best dev epoch, a merge with the base whose
alpha is chosen on dev) goes to ``improved/model/`` and is evaluated by the same evaluators;
report.md, report.json and report.png put the three side by side, with a paired per-query
comparison of the two recipes on SciFact test.

Beside dense retrieval, BM25 alone (once: it needs no model) and hybrid search are scored on
SciFact test and DL19-mini from the same corpus embeddings (``evaluate_modes``). SciFact's
hybrid weight is the base model's pick by 5-fold cross-validation on SciFact *train* queries
(min-max normalisation); the fine-tuned models saw every train query, so tuning on them would
overrate the dense side, and they reuse the base model's pick. DL19-mini has no train queries:
its hybrid row uses search's untuned default.
"""

# Named main_job.py, not main.py: a submodule called main would shadow the function biencoder.cli.main.
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TASK_NAMES = ("scifact", "trec-dl19", "stsb")
HYBRID_TASKS = ("scifact", "trec-dl19")  # retrieval tasks that also get BM25 and hybrid rows
FUSION_CV: dict[str, Any] = {"grid": "0,0.1,...,1", "folds": 5, "seed": 42, "normalization": "minmax"}
ARMS = ("card", "improved")
MISSING_DATA = (
    "data folder {data} not found. The main job fine-tunes on SciFact's train split and evaluates on "
    "SciFact test, TREC DL19 (mini) and STS Benchmark test, read from scifact/, trec-dl19-mini/ and "
    "stsb/ in that folder (the layout of ../shared/data; see its README.md). Put the data there, "
    "or pass its location with --data DIR."
)


def register(sub: Any) -> None:
    from biencoder.resolve import BASE_MODEL

    p = sub.add_parser(
        "main",
        help="fine-tune on SciFact with the card's recipe, evaluate base vs fine-tuned",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default="../shared/data", help="the data folder (default: %(default)s)")
    p.add_argument(
        "--output", "-o", default="runs/main", help="where the model and the report go (default: %(default)s)"
    )
    p.add_argument("--model", default=BASE_MODEL, help="the base model (default: %(default)s)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=-1,
        help="stop training after n steps (quick checks; default: the recipe's 3 epochs)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="evaluate on n queries/pairs per task only (quick checks)"
    )
    p.add_argument(
        "--max-seq-length", type=int, default=None, help="training max_seq_length (default: the recipe's 256)"
    )
    p.add_argument(
        "--arms",
        default="card,improved",
        help="comma-separated recipes to run: card (the model card's), improved (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=42, help="training seed of both arms (default: %(default)s)")
    p.add_argument(
        "--eval-backend",
        choices=["onnx", "torch"],
        default="onnx",
        help="runtime of every evaluation: onnx (fp32, equal to torch to 1e-5 and ~2x faster on CPU) "
        "or torch (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument("--no-cache", action="store_true", help="re-evaluate the base model even when cached")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    p.set_defaults(func=run)


def check_data(data: Path) -> None:
    if not data.is_dir():
        raise FileNotFoundError(MISSING_DATA.format(data=data))
    needed = [
        "scifact/corpus.jsonl",
        "scifact/queries.jsonl",
        "scifact/qrels/train.tsv",
        "scifact/qrels/test.tsv",
        "trec-dl19-mini/corpus.jsonl",
        "trec-dl19-mini/qrels/test.tsv",
        "stsb/sts-test.csv",
    ]
    missing = [name for name in needed if not (data / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{data} lacks {', '.join(missing)}. " + MISSING_DATA.format(data=data))


def run(args: argparse.Namespace) -> int:
    data, output = Path(args.data), Path(args.output)
    check_data(data)
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(
            f"--max-steps must be positive (or -1 for the recipe's epochs), got {args.max_steps}"
        )
    arms = [a.strip() for a in str(args.arms).split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        raise ValueError(f"--arms takes a comma-separated subset of {', '.join(ARMS)}, got {args.arms!r}")
    started = time.perf_counter()
    show = None if logger.isEnabledFor(logging.INFO) else False

    from biencoder.evaluation.report import read_json, write_json
    from biencoder.evaluation.suite import cached_results, evaluate_all, fingerprint
    from biencoder.evaluation.tasks import TASKS, TaskOptions, build_tasks
    from biencoder.resolve import resolve_model_path

    options = TaskOptions(limit=args.limit, batch_size=args.batch_size, show_progress=show)
    evaluators = build_tasks(TASK_NAMES, data, options)
    seconds: dict[str, float] = {}
    steps = 1 + len(arms) + 1

    # 1. The base model, cached: the key covers the model's files, the data files and the settings.
    base_path = resolve_model_path(args.model)
    key = fingerprint(
        [base_path, *(data / TASKS[t].path for t in TASK_NAMES)],
        {
            "tasks": TASK_NAMES,
            "limit": args.limit,
            "version": _version(),
            "backend": args.eval_backend,
            "fusion_cv": FUSION_CV,
        },
    )
    logger.info("[1/%d] base model %s", steps, args.model)
    loaded: list[Any] = []

    def base_encoder() -> Any:  # one base model for evaluation and mining: the corpus is embedded once
        from biencoder.memo import MemoEncoder

        loaded.append(MemoEncoder(_load(base_path, args)))
        return loaded[0]

    fusion_file = output / "cache" / f"base-fusion-{key}.json"
    fusion: dict[str, dict[str, Any]] = {}

    def evaluate_base() -> dict[str, dict[str, float]]:
        encoder = base_encoder()
        fusion.update(_fusion_choices(encoder, data, args, options))
        write_json(fusion_file, fusion)
        wrapped = _with_hybrid(evaluators, fusion, lexical=True)
        return _merge_hybrid(evaluate_all(encoder, wrapped, "base"), wrapped)

    t0 = time.perf_counter()
    base, from_cache = cached_results(
        output / "cache" / f"base-{key}.json",
        evaluate_base,
        use_cache=not args.no_cache and fusion_file.is_file(),
    )
    if from_cache:
        fusion.update(read_json(fusion_file))
    seconds["base evaluation" + (" (cached)" if from_cache else "")] = time.perf_counter() - t0
    scifact = evaluators[TASK_NAMES.index("scifact")]
    evaluators = _with_hybrid(evaluators, fusion, lexical=False)  # the arms: dense and hybrid
    arm_results: dict[str, Any] = {}
    per_query: dict[str, dict[str, float]] = {}

    # 2. The card's recipe; the trainer evaluates the final model with the same evaluators.
    if "card" in arms:
        from biencoder.training import TrainConfig, train

        logger.info("[2/%d] fine-tuning on %s (the card's recipe)", steps, data / "scifact")
        config = TrainConfig(
            data=(str(data / "scifact"),),
            output_dir=str(output / "model"),
            base_model=str(args.model),
            max_steps=args.max_steps,
            seed=args.seed,
            **({"max_seq_length": args.max_seq_length} if args.max_seq_length else {}),
            eval_backend=args.eval_backend,
            device=args.device,
        )
        t0 = time.perf_counter()
        result = train(config, evaluators=evaluators, show_progress=show)
        tuned = _from_history(result.eval_history, evaluators)
        if tuned is None:  # a trainer that did not evaluate: do it here
            tuned = evaluate_all(_load(result.output_dir, args), evaluators, "card recipe")
        tuned = _merge_hybrid(tuned, evaluators)
        per_query["card recipe"] = _ndcg_per_query(scifact)
        seconds["card recipe: fine-tuning and evaluation"] = time.perf_counter() - t0
        arm_results["card recipe"] = {"results": tuned, "train": result}

    # 3. The improved recipe on the same data, evaluated by the same evaluators.
    if "improved" in arms:
        from biencoder.training.recipe import ImprovedRecipe, run_recipe

        logger.info("[%d/%d] the improved recipe on %s", steps - 1, steps, data / "scifact")
        recipe = ImprovedRecipe(eval_backend=args.eval_backend)
        t0 = time.perf_counter()
        improved = run_recipe(
            recipe,
            data / "scifact",
            output / "improved",
            base_model=str(args.model),
            seed=args.seed,
            max_steps=args.max_steps,
            max_seq_length=args.max_seq_length or 256,
            device=args.device,
            show_progress=show,
            base_encoder=loaded[0] if loaded and recipe.mining_backend == args.eval_backend else None,
        )
        results = evaluate_all(_load(improved.model_dir, args), evaluators, "improved recipe")
        results = _merge_hybrid(results, evaluators)
        per_query["improved recipe"] = _ndcg_per_query(scifact)
        seconds["improved recipe: all steps and evaluation"] = time.perf_counter() - t0
        for step, value in improved.seconds.items():
            seconds[f"  improved: {step}"] = value
        arm_results["improved recipe"] = {"results": results, "recipe": recipe, "run": improved}
        _record_results(improved.model_dir / "README.md", results)

    # 4. The report.
    from biencoder.cli._main_report import write_main_report

    logger.info("[%d/%d] writing the report", steps, steps)
    seconds["total"] = time.perf_counter() - started
    paths = write_main_report(output, base, arm_results, per_query, args, seconds, fusion)
    logger.info("report: %s", ", ".join(str(p) for p in paths))
    print((output / "report.md").read_text(encoding="utf-8"), end="")
    return 0


def _fusion_choices(
    encoder: Any, data: Path, args: argparse.Namespace, options: Any
) -> dict[str, dict[str, Any]]:
    """Each hybrid task's fusion settings and where they come from. SciFact's alpha: the base
    model's k-fold cross-validated pick on SciFact train queries; the corpus vectors come from
    ``encoder`` (a MemoEncoder: the test evaluation then reuses them)."""
    import numpy as np

    from biencoder.evaluation.fusion_cv import cross_validate, parse_grid
    from biencoder.evaluation.hybrid import RANK_DEPTH, Candidates, FusionSettings, alpha_scores
    from biencoder.evaluation.retrieval import RetrievalEvaluator, subset, top_k
    from biencoder.index.fusion import DEFAULT_CANDIDATES, ScoreNormalization

    folds, fetch = int(FUSION_CV["folds"]), max(DEFAULT_CANDIDATES, RANK_DEPTH)
    train = RetrievalEvaluator.from_beir(data / "scifact", "train", name="scifact-train")
    if args.limit is not None:  # quick checks: as many train queries as the folds need, a small corpus
        train = subset(train, train.query_ids[: max(args.limit, folds)], extra_docs=10 * args.limit)
    doc_ids, texts = list(train.corpus), [train.queries[q] for q in train.query_ids]
    logger.info("choosing SciFact's hybrid alpha on %d train queries (%d-fold CV)", len(texts), folds)
    show = options.show_progress
    q_emb = encoder.encode(texts, batch_size=options.batch_size, show_progress=show)
    d_emb = encoder.encode(list(train.corpus.values()), batch_size=options.batch_size, show_progress=show)
    tie_rank = np.empty(len(doc_ids), dtype=np.int64)  # equal scores: smaller doc id first, as evaluated
    tie_rank[np.argsort(np.array(doc_ids, dtype=object), kind="stable")] = np.arange(len(doc_ids))
    scores, keys = top_k(q_emb, d_emb, fetch, encoder.similarity, tie_rank)
    candidates = Candidates(
        ids=doc_ids, dense_keys=keys, dense_scores=scores, lexical=train.bm25().search(texts, fetch)
    )
    grid = parse_grid(str(FUSION_CV["grid"]))
    minmax = ScoreNormalization.parse(str(FUSION_CV["normalization"]))
    per_query = alpha_scores(
        candidates, [train.qrels[q] for q in train.query_ids], grid, normalization=minmax
    )
    cv = cross_validate(per_query, grid, folds=folds, seed=int(FUSION_CV["seed"]))
    picked = FusionSettings(alpha=cv.alpha, normalization=minmax, candidates=fetch)
    return {
        "scifact": {
            **picked.to_dict(),
            "source": f"the base model's {folds}-fold cross-validation on {len(texts)} SciFact train "
            "queries; the fine-tuned models reuse it (they trained on those queries, which would "
            "overrate the dense side)",
            "cv_ndcg@10": cv.cv_score,
            "fold_alphas": [f.alpha for f in cv.folds],
            "train_ndcg@10_by_alpha": {f"{a:g}": m for a, m in zip(cv.grid, cv.means, strict=True)},
        },
        "trec-dl19": {
            **FusionSettings().to_dict(),
            "source": "hybrid search's untuned default (DL19-mini has no train queries to tune on)",
        },
    }


def fusion_settings(record: dict[str, Any]) -> Any:
    """The FusionSettings a report's fusion record describes."""
    from biencoder.evaluation.hybrid import FusionSettings

    return FusionSettings(
        fusion=record["fusion"],
        alpha=record["alpha"],
        normalization=record["normalization"],
        adaptive=record["adaptive"],
        candidates=record["candidates"],
    )


class _HybridEvaluator:
    """A retrieval evaluator that returns its dense metrics (training histories read as before)
    and keeps, in ``last``, its hybrid (with ``lexical``, also BM25) results, scored from the
    same corpus vectors by ``evaluate_modes``."""

    def __init__(self, inner: Any, fusion: Any, lexical: bool) -> None:
        self.inner, self.fusion = inner, fusion
        self.modes = ("dense", "lexical", "hybrid") if lexical else ("dense", "hybrid")
        self.last: dict[str, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def primary_metric(self) -> str:
        return str(self.inner.primary_metric)

    def __call__(self, encoder: Any) -> dict[str, float]:
        results = self.inner.evaluate_modes(encoder, self.modes, self.fusion)
        self.last = {name: {k: float(v) for k, v in m.items()} for name, m in results.items()}
        return self.last[self.name]


def _with_hybrid(evaluators: list[Any], fusion: dict[str, dict[str, Any]], lexical: bool) -> list[Any]:
    return [
        _HybridEvaluator(e, fusion_settings(fusion[e.name]), lexical) if e.name in fusion else e
        for e in evaluators
    ]


def _merge_hybrid(results: dict[str, dict[str, float]], evaluators: list[Any]) -> dict[str, dict[str, float]]:
    """``results`` with each hybrid evaluator's extra rows (``scifact-bm25``, ``scifact-hybrid``)
    after its own."""
    extra = {e.name: e.last for e in evaluators if isinstance(e, _HybridEvaluator)}
    out: dict[str, dict[str, float]] = {}
    for name, metrics in results.items():
        out[name] = metrics
        out.update({k: v for k, v in extra.get(name, {}).items() if k != name})
    return out


def _load(folder: Path, args: argparse.Namespace) -> Any:
    """A saved model in the evaluation runtime (an ONNX graph is exported into the folder once)."""
    from biencoder.loading import load_encoder

    return load_encoder(folder, args.eval_backend, device=args.device)


def _ndcg_per_query(evaluator: Any) -> dict[str, float]:
    return {q: m["ndcg@10"] for q, m in getattr(evaluator, "last_per_query", {}).items()}


def _record_results(card: Path, results: dict[str, dict[str, float]]) -> None:
    """The final (test) evaluation of the improved model, appended to its card."""
    from biencoder.atomic import atomic_file

    lines = ["", "## Evaluation of the merged model (read once, after every choice was made on dev)", ""]
    lines += ["| task | metric | value |", "|---|---|---:|"]
    lines += [
        f"| {task} | {name} | {value:.4f} |" for task, ms in results.items() for name, value in ms.items()
    ]
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    with atomic_file(card) as tmp:
        tmp.write_text(text.rstrip() + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _version() -> str:
    from biencoder import __version__

    return __version__


def _from_history(
    history: list[dict[str, float]], evaluators: list[Any]
) -> dict[str, dict[str, float]] | None:
    if not history:
        return None
    final = history[-1]
    out = {
        e.name: {k.removeprefix(f"{e.name}_"): v for k, v in final.items() if k.startswith(f"{e.name}_")}
        for e in evaluators
    }
    return out if all(out.values()) else None
