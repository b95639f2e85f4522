"""ServeConfig: what ``biencoder serve`` runs and the limits it enforces, each also an env variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "BIENCODER_"
BACKENDS = ("onnx", "torch")
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Every option of the server; the CLI fills it, ``from_env`` reads ``BIENCODER_<NAME>``."""

    model: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "model name or folder"}
    )
    index: str | None = field(
        default=None,
        metadata={
            "help": "store folder (biencoder index: memory, lancedb or pgvector with $BIENCODER_PG_DSN) "
            "to serve POST /v1/search over"
        },
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=8080, metadata={"help": "port to bind"})
    backend: str = field(
        default="onnx",
        metadata={"help": "onnx (CPU, exports the graph once if the folder has none) or torch (GPU)"},
    )
    precision: str = field(
        default="fp32", metadata={"help": "onnx graph: fp32 (exact) or int8 (faster, fidelity-checked)"}
    )
    device: str | None = field(default=None, metadata={"help": "torch backend: cpu, cuda, ..."})
    served_model_names: tuple[str, ...] = field(
        default=(), metadata={"help": "names clients may send as `model` (default: the model's name)"}
    )
    api_key: str | None = field(
        default=None,
        metadata={"help": "require `Authorization: Bearer KEY` (not on /health, /metrics, GET /, GET /ping)"},
    )
    max_batch_tokens: int = field(
        default=16384, metadata={"help": "padded tokens one model batch holds at most"}
    )
    max_batch_requests: int | None = field(
        default=None, metadata={"help": "requests one batch joins at most (1: batching off)"}
    )
    max_concurrent_requests: int = field(
        default=512, metadata={"help": "requests in flight beyond which the answer is 429"}
    )
    max_client_batch_size: int = field(default=2048, metadata={"help": "inputs one request holds at most"})
    payload_limit: int = field(default=2_000_000, metadata={"help": "request body bytes at most"})
    max_input_chars: int = field(default=100_000, metadata={"help": "characters one input holds at most"})
    auto_truncate: bool = field(
        default=True, metadata={"help": "TEI routes: truncate long inputs when the request does not say"}
    )
    max_k: int = field(default=1000, metadata={"help": "search: hits per query at most"})
    body_timeout: float = field(
        default=30.0, metadata={"help": "seconds a request body may take to arrive (else 408)"}
    )
    health_timeout: float = field(
        default=30.0, metadata={"help": "seconds a model batch may run before /health reports 503"}
    )
    graceful_timeout: float = field(
        default=30.0, metadata={"help": "seconds SIGTERM waits for in-flight requests"}
    )
    workers: int = field(default=1, metadata={"help": "server processes sharing the port (replicas)"})
    threads: int | None = field(
        default=None, metadata={"help": "onnx: intra-op threads per replica (default: cores / workers)"}
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.backend == "torch" and self.precision != "fp32":
            raise ValueError("the torch backend serves fp32 only; --precision int8 needs --backend onnx")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must lie in 0..65535, got {self.port}")
        positive = (
            "max_batch_tokens",
            "max_concurrent_requests",
            "max_client_batch_size",
            "payload_limit",
            "max_input_chars",
            "max_k",
            "workers",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be positive or unset, got {self.threads}")
        if self.max_batch_requests is not None and self.max_batch_requests < 1:
            raise ValueError(f"max_batch_requests must be positive or unset, got {self.max_batch_requests}")
        for name in ("body_timeout", "health_timeout", "graceful_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")

    @staticmethod
    def env_name(name: str) -> str:
        return ENV_PREFIX + name.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeConfig:
        """Defaults, then ``BIENCODER_<FIELD>`` variables, then ``overrides`` (the command line)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is not None:
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def model_names(self) -> tuple[str, ...]:
        """The names a request's ``model`` may give: the served names, else the model and its basename."""
        if self.served_model_names:
            return self.served_model_names
        base = self.model.rstrip("/").rsplit("/", 1)[-1]
        return (self.model,) if base == self.model else (self.model, base)


def _parse(name: str, kind: str, raw: str) -> Any:
    """An environment variable's text as the field's type; a clear error naming the variable."""
    var = ServeConfig.env_name(name)
    try:
        if kind.startswith("bool"):
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes")
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError:
        raise ValueError(f"{var}={raw!r}: expected {kind.split(' ')[0]}") from None
    return raw
