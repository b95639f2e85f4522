"""Issue 11's protocol: both recipes over several seeds, mean and standard deviation, paired per query.

For each seed, ``biencoder main --seed S --output OUT/seed-S`` (both arms; the base model's
results are cached after the first run, and a seed whose report.json exists is read, not rerun,
unless --rerun). Then, per model: SciFact test nDCG@10 and recall@10, STSb test Spearman and
TREC DL19-mini nDCG@10 as mean +- sample standard deviation over the seeds; and the paired
comparison of improved vs card recipe on SciFact test, per seed and pooled over the seeds (each
seed's 300 query pairs together: 900 pairs for 3 seeds; wins / ties / losses, paired
randomisation p-value). The improved recipe's setting was chosen by cross-validation on SciFact
train (``biencoder cv``); SciFact test is read once per model. Each seed's per-query scores stay
in its report.json, so the pooled test can be rerun from them.

    python benchmarks/recipes.py --seeds 42 43 44 --output runs/seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROWS = (
    ("scifact", "ndcg@10"),
    ("scifact", "recall@10"),
    ("stsb", "spearman"),
    ("trec-dl19", "ndcg@10"),
)
MODELS = ("base", "card recipe", "improved recipe")


def run_seed(seed: int, output: Path, data: str, rerun: bool) -> dict[str, Any]:
    report = output / f"seed-{seed}" / "report.json"
    if rerun or not report.is_file():
        cmd = [
            sys.executable,
            "-m",
            "biencoder",
            "main",
            "--data",
            data,
            "--seed",
            str(seed),
            "--arms",
            "card,improved",
        ]
        cmd += ["--output", str(report.parent)]
        # one cache of the base model's results for every seed
        (output / "cache").mkdir(parents=True, exist_ok=True)
        report.parent.mkdir(parents=True, exist_ok=True)
        if not (report.parent / "cache").exists():
            (report.parent / "cache").symlink_to(Path("..") / "cache")
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    result: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return result


def summarise(reports: dict[int, dict[str, Any]]) -> str:
    from biencoder.evaluation.paired import compare

    lines = [
        f"Seeds: {', '.join(map(str, reports))}",
        "",
        "| task | metric | " + " | ".join(MODELS) + " |",
        "|---|---|" + "---:|" * len(MODELS),
    ]
    for task, metric in ROWS:
        cells = []
        for model in MODELS:
            values = [r["results"][model][task][metric] for r in reports.values()]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.4f} +- {sd:.4f}")
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    minutes = [r["seconds"]["total"] / 60 for r in reports.values()]
    lines += [
        "",
        "Whole `biencoder main` (both arms): " + ", ".join(f"{m:.1f}" for m in minutes) + " min",
        "",
    ]
    lines += [
        "| paired, SciFact test nDCG@10 | wins | ties | losses | mean diff | p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    pooled_a: dict[str, float] = {}
    pooled_b: dict[str, float] = {}
    for seed, r in reports.items():
        a, b = (r["per_query_scifact_ndcg@10"][m] for m in ("card recipe", "improved recipe"))
        lines.append(_paired_row(f"seed {seed}", compare(a, b)))
        pooled_a |= {f"{seed}/{q}": v for q, v in a.items()}
        pooled_b |= {f"{seed}/{q}": v for q, v in b.items()}
    lines.append(_paired_row(f"pooled ({len(pooled_a)} pairs)", compare(pooled_a, pooled_b)))
    for seed, r in reports.items():
        lines.append(f"\nseed {seed}: improved recipe {json.dumps(r['models']['improved recipe'])}")
    return "\n".join(lines) + "\n"


def _paired_row(label: str, r: Any) -> str:
    return f"| {label} | {r.wins} | {r.ties} | {r.losses} | {r.mean_difference:+.4f} | {r.p_value:.4f} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--output", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--rerun", action="store_true", help="run seeds whose report.json exists again")
    args = parser.parse_args()
    reports = {s: run_seed(s, args.output, args.data, args.rerun) for s in args.seeds}
    text = summarise(reports)
    (args.output / "summary.md").write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
