"""Running `biencoder serve` for tests: a real process on a loopback port, or the app in-process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from biencoder.protocol import TokenBatch, Tokens

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m biencoder serve`` on 127.0.0.1; ``stop`` sends SIGTERM and returns the exit code."""

    def __init__(
        self, model: Path | str, *args: str, env: dict[str, str] | None = None, port: int | None = None
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"biencoder-serve-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "biencoder",
            "serve",
            "--model",
            str(model),
            "--port",
            str(self.port),
            *args,
        ]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            cmd, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not healthy within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log_file.close()


def post(url: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=kw.pop("timeout", 60), **kw)


class RecordingEncoder:
    """Row i of a text is [token count, first id]; every encode_tokens call is recorded."""

    dimension = 2
    similarity_fn_name = "cosine"
    max_seq_length = 16
    normalizes = False
    backend_tokenizer = None

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls: list[list[list[int]]] = []
        self.delay = delay
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def tokenize_texts(self, texts: Sequence[str]) -> Tokens:
        ids = [[len(t), *range(len(t))][: self.max_seq_length] for t in texts]
        return Tokens(ids, [[0] * len(i) for i in ids], np.array([len(t) + 1 > 16 for t in texts]))

    def encode_tokens(self, tokens: TokenBatch, batch_size: int = 32, normalize: bool | None = None) -> Any:
        self.gate.wait()
        self.calls.append([list(r) for r in tokens.ids])
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return np.array([[len(r), r[0]] for r in tokens.ids], dtype=np.float32)

    def encode(
        self, texts: Any, batch_size: int = 32, normalize: bool | None = None, show_progress: Any = None
    ) -> Any:
        return self.encode_tokens(self.tokenize_texts(list(texts)))

    def similarity(self, a: Any, b: Any) -> Any:
        return np.asarray(a) @ np.asarray(b).T
