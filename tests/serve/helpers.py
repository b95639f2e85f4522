"""Running `biencoder serve` for tests: a real process on a loopback port, or the app in-process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

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
