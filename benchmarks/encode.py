"""Our SentenceEncoder.encode against sentence-transformers' encode, measured in one run.

Interleaved rounds (ours, reference, ours, ...) on the same texts; medians over rounds; ratios
> 1 mean we are faster. Workloads: mixed-length real passages (SciFact abstracts, batches of 32),
short real queries (SciFact claims, batches of 32), and single-query latency (p50 of one text a call).

    .venv/bin/python benchmarks/encode.py [--rounds 5] [--passages 256] [--queries 1024] [--single 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(os.environ.get("BIENCODER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_texts(n_passages: int, n_queries: int) -> tuple[list[str], list[str]]:
    with (DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(n_passages), f, strict=False)]
    with (DATA / "scifact" / "queries.jsonl").open(encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(n_queries), f, strict=False)]
    return [f"{d['title']} {d['text']}" for d in docs], queries


def throughput(encode: Callable[[list[str]], object], texts: list[str]) -> float:
    start = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - start)


def latency_p50(encode_one: Callable[[str], object], texts: list[str]) -> float:
    times = []
    for text in texts:
        start = time.perf_counter()
        encode_one(text)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--single", type=int, default=200)
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from biencoder import SentenceEncoder
    from biencoder.resolve import BASE_MODEL, resolve_model_path

    if not DATA.is_dir():
        raise SystemExit(f"real data not found at {DATA} (set BIENCODER_DATA)")
    passages, queries = load_texts(args.passages, args.queries)
    path = resolve_model_path(BASE_MODEL)
    ours = SentenceEncoder.load(path, device="cpu")
    ref = SentenceTransformer(str(path), device="cpu")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(passages)} passages, "
        f"{len(queries)} queries, {args.single} single queries, {args.rounds} interleaved rounds"
    )

    diff = np.abs(ours.encode(passages[:64]) - ref.encode(passages[:64])).max()
    print(f"max abs difference on 64 passages: {diff:.2e}")

    systems = {
        "ours": (lambda t: ours.encode(t, batch_size=32), ours.encode),
        "sentence-transformers": (lambda t: ref.encode(t, batch_size=32), ref.encode),
    }
    results: dict[str, dict[str, list[float]]] = {
        name: {"passages": [], "queries": [], "p50": []} for name in systems
    }
    for batch, one in systems.values():  # warm-up
        batch(passages[:32])
        one(queries[0])
    for r in range(args.rounds):
        order = list(systems) if r % 2 == 0 else list(reversed(systems))
        for name in order:
            batch, one = systems[name]
            results[name]["passages"].append(throughput(batch, passages))
            results[name]["queries"].append(throughput(batch, queries))
            results[name]["p50"].append(latency_p50(one, queries[: args.single]))

    med = {name: {k: statistics.median(v) for k, v in res.items()} for name, res in results.items()}
    o, s = med["ours"], med["sentence-transformers"]
    print(f"{'':22s} {'passages/s':>11s} {'queries/s':>10s} {'single p50 ms':>14s}")
    for name, m in med.items():
        print(f"{name:22s} {m['passages']:11.1f} {m['queries']:10.1f} {m['p50']:14.2f}")
    print(
        f"{'ratio (ours / ref)':22s} {o['passages'] / s['passages']:11.2f} "
        f"{o['queries'] / s['queries']:10.2f} "
        f"{s['p50'] / o['p50']:14.2f}   (latency ratio = ref p50 / ours p50)"
    )


if __name__ == "__main__":
    main()
