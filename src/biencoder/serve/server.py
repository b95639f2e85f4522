"""Running the app: uvicorn with a draining shutdown, and N replicas on one port.

SIGTERM (or Ctrl-C) starts draining: /health answers 503 and new requests get 503 while the
queued and in-flight ones are answered; then the server stops and the process exits 0 (a
second signal stops at once). ``workers > 1`` starts that many replica processes bound to the
same port with SO_REUSEPORT, the kernel spreading connections; the parent forwards signals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType
from typing import Any

import uvicorn

from biencoder.serve.config import ServeConfig

logger = logging.getLogger(__name__)

_DRAIN_POLL = 0.02


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first exit signal drains before stopping (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, app_state: Any, batcher: Any, timeout: float) -> None:
        super().__init__(config)
        self.app_state = app_state
        self.batcher = batcher
        self.drain_timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None:  # a second signal, or not started: stop now
            self.force_exit = self._draining
            self.should_exit = True
            return
        self._draining = True
        self.app_state.draining = True
        logger.info("signal %d: draining (%d requests in flight)", sig, self.app_state.in_flight)
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while time.monotonic() < deadline:
            if self.app_state.idle and self.batcher.queued_texts == 0:
                break
            await asyncio.sleep(_DRAIN_POLL)
        else:
            logger.warning("drain timeout: %d requests still in flight", self.app_state.in_flight)
        self.should_exit = True


def serve(config: ServeConfig, *, log_level: str = "info", reuse_port: bool = False) -> int:
    """Load the model (and index), then serve until a signal; returns the exit code."""
    if config.workers > 1:
        return _replicas(config)
    from biencoder.serve.app import create_app
    from biencoder.serve.model import load_served_model

    # Until uvicorn installs its own handlers: a stop signal while loading ends the process cleanly.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_while_loading)
    served = load_served_model(config.model, config.backend, config.precision, config.device, config.threads)
    index = _load_index(config.index) if config.index else None
    app = create_app(served, config, index)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(config.graceful_timeout),
        limit_concurrency=None,
        server_header=False,
    )
    server = DrainingServer(uv_config, app.state.biencoder, app.state.batcher, config.graceful_timeout)
    sockets = [_reuse_port_socket(config.host, config.port)] if reuse_port else None
    server.run(sockets=sockets)
    return 0


def _exit_while_loading(sig: int, _: FrameType | None) -> None:
    logger.info("signal %d before the server started: exiting", sig)
    raise SystemExit(0)


def _load_index(path: str) -> Any:
    """Any store folder (memory, lancedb, pgvector: BIENCODER_PG_DSN connects the last)."""
    from biencoder.stores import open_store

    return open_store(path)


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _replicas(config: ServeConfig) -> int:
    """``config.workers`` child servers on one port; signals are forwarded, the worst exit code returned."""
    env = dict(os.environ)
    for name, value in _child_env(config).items():
        env[name] = value
    cmd = [sys.executable, "-m", "biencoder", "serve", "--workers", "1", "--reuse-port"]
    children = [subprocess.Popen(cmd, env=env) for _ in range(config.workers)]
    logger.info(
        "started %d replicas on %s:%d: pids %s",
        len(children),
        config.host,
        config.port,
        [c.pid for c in children],
    )

    def forward(sig: int, _: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return max((abs(c) for c in codes), default=0)


def _child_env(config: ServeConfig) -> dict[str, str]:
    """The config as BIENCODER_* variables for the replicas (each runs one worker)."""
    from dataclasses import fields

    out: dict[str, str] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if value is None or f.name == "workers":
            continue
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[ServeConfig.env_name(f.name)] = str(value)
    if config.threads is None and config.backend == "onnx":
        from biencoder.runtime.onnx_encoder import available_cores

        out[ServeConfig.env_name("threads")] = str(max(1, available_cores() // config.workers))
    return out
