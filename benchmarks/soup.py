"""Issue 20's model soup: the seeds' fine-tunes of one arm averaged uniformly, and that soup merged
with the base model at fixed alphas (WiSE-FT). Each is scored by the main job's evaluators
(SciFact test, TREC DL19-mini, STSb test; ONNX runtime as the main job) and paired per query on
SciFact test against every seed's card recipe and every seed's fine-tune of the same arm (the
soup's scores repeated per seed: 900 pairs for 3 seeds; and, with no repeated scores, against the
seeds' per-query mean: 300 pairs). With --per-seed, each seed's fine-tune
merged with the base at the same alphas (what one run of the main job could afford), paired with
its own seed's card recipe.

The alphas are fixed in advance, never chosen on these test sets. Run after benchmarks/recipes.py,
whose output it reads (OUT/seed-S/report.json and the arms' model folders):

    python benchmarks/soup.py --runs runs/seeds --seeds 42 43 44 --arm improved --alpha 0.75 --per-seed
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Any

from biencoder.evaluation.base import Evaluator
from biencoder.evaluation.paired import compare
from biencoder.evaluation.suite import evaluate_all
from biencoder.evaluation.tasks import TaskOptions, build_tasks
from biencoder.loading import load_encoder
from biencoder.main_job.settings import TASK_NAMES
from biencoder.training.merge import merge

ARM_FOLDERS = {"card": ("model", "card recipe"), "improved": ("improved/model", "improved recipe")}
ROWS = (("scifact", "ndcg@10"), ("trec-dl19", "ndcg@10"), ("stsb", "spearman"))


def evaluate(
    folder: Path, evaluators: list[Evaluator]
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """The main job's tasks on ``folder``; and SciFact test nDCG@10 per query."""
    results = evaluate_all(load_encoder(folder, "onnx"), evaluators, folder.name)
    scifact = evaluators[TASK_NAMES.index("scifact")]
    per_query = {q: m["ndcg@10"] for q, m in getattr(scifact, "last_per_query", {}).items()}
    return results, per_query


def build(out: Path, base: str | None, models: list[Path], alpha: float | None) -> Path:
    """The soup (``base`` None) or its merge with ``base`` at ``alpha``, saved once into ``out``."""
    if not (out / "modules.json").is_file():
        merge(base, models, alpha, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/seeds"), help="benchmarks/recipes.py's --output"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--arm", choices=sorted(ARM_FOLDERS), default="improved")
    parser.add_argument(
        "--alpha", type=float, action="append", default=[], help="merge the soup with the base"
    )
    parser.add_argument(
        "--per-seed", action="store_true", help="also merge each seed's fine-tune with the base at --alpha"
    )
    parser.add_argument("--base", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )

    folder, arm_name = ARM_FOLDERS[args.arm]
    reports = {
        s: json.loads((args.runs / f"seed-{s}" / "report.json").read_text(encoding="utf-8"))
        for s in args.seeds
    }
    models = [args.runs / f"seed-{s}" / folder for s in args.seeds]
    missing = [str(m) for m in models if not (m / "modules.json").is_file()]
    if missing:
        raise SystemExit(f"no saved model in {', '.join(missing)}: run benchmarks/recipes.py first")
    root = args.runs / f"soup-{args.arm}"
    # each candidate: the model standing for each seed (a soup stands for all of them)
    soup_path = build(root / "soup", None, models, None)
    candidates = {"soup": dict.fromkeys(args.seeds, soup_path)}
    for alpha in args.alpha:
        merged = build(root / f"soup-a{alpha:g}", args.base, models, alpha)
        candidates[f"soup, alpha {alpha:g}"] = dict.fromkeys(args.seeds, merged)
        if args.per_seed:
            candidates[f"each seed's fine-tune, alpha {alpha:g}"] = {
                s: build(root / f"seed-{s}-a{alpha:g}", args.base, [m], alpha)
                for s, m in zip(args.seeds, models, strict=True)
            }

    evaluators = build_tasks(TASK_NAMES, args.data, TaskOptions())  # the data read once
    evaluated: dict[Path, dict[str, Any]] = {}
    for paths in candidates.values():
        for path in paths.values():
            if path not in evaluated:
                results, per_query = evaluate(path, evaluators)
                evaluated[path] = {"results": results, "per_query_scifact_ndcg@10": per_query}
    scored = {
        name: {str(seed): {"path": str(path), **evaluated[path]} for seed, path in paths.items()}
        for name, paths in candidates.items()
    }
    text = summarise(reports, arm_name, scored)
    out = root / "results.json"
    out.write_text(json.dumps(scored, indent=1), encoding="utf-8")
    (root / "summary.md").write_text(text, encoding="utf-8")
    print(text, end="")


def summarise(reports: dict[int, dict[str, Any]], arm_name: str, scored: dict[str, Any]) -> str:
    seeds = ", ".join(map(str, reports))
    lines = [f"Soup of the {arm_name}'s fine-tunes, seeds {seeds}", ""]
    lines += ["| model | " + " | ".join(f"{t} {m}" for t, m in ROWS) + " |", "|---|" + "---:|" * len(ROWS)]
    for model in ("base", "card recipe", arm_name):
        cells = [statistics.fmean(r["results"][model][t][m] for r in reports.values()) for t, m in ROWS]
        label = model if model == "base" else f"{model} (mean of seeds)"
        lines.append(f"| {label} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    for name, by_seed in scored.items():
        cells = [statistics.fmean(e["results"][t][m] for e in by_seed.values()) for t, m in ROWS]
        lines.append(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    head = "| SciFact test nDCG@10, paired per seed, pooled | wins | ties | losses | mean diff | p |"
    lines += ["", head, "|---|---:|---:|---:|---:|---:|"]
    for name, by_seed in scored.items():
        for against in dict.fromkeys(("card recipe", arm_name)):
            a: dict[str, float] = {}
            b: dict[str, float] = {}
            for seed, r in reports.items():
                mine = by_seed[str(seed)]["per_query_scifact_ndcg@10"]
                a |= {f"{seed}/{q}": v for q, v in r["per_query_scifact_ndcg@10"][against].items()}
                b |= {f"{seed}/{q}": mine[q] for q in r["per_query_scifact_ndcg@10"][against]}
            lines.append(_row(f"{name} vs {against} ({len(a)} pairs)", compare(a, b)))
            if len({e["path"] for e in by_seed.values()}) == 1:
                # one model for every seed: the pairs above repeat its scores, so also test it
                # against the seeds' per-query mean (one pair a query, no repeated scores)
                mine = next(iter(by_seed.values()))["per_query_scifact_ndcg@10"]
                runs = [r["per_query_scifact_ndcg@10"][against] for r in reports.values()]
                mean = {q: statistics.fmean(run[q] for run in runs) for q in runs[0]}
                label = f"{name} vs {against}, seeds' per-query mean ({len(mean)} pairs)"
                lines.append(_row(label, compare(mean, {q: mine[q] for q in mean})))
    return "\n".join(lines) + "\n"


def _row(label: str, p: Any) -> str:
    return f"| {label} | {p.wins} | {p.ties} | {p.losses} | {p.mean_difference:+.4f} | {p.p_value:.4f} |"


if __name__ == "__main__":
    main()
