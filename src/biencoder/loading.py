"""One entry point for both runtimes: the PyTorch SentenceEncoder or the torch-free OnnxEncoder."""

from __future__ import annotations

import argparse
from enum import StrEnum
from pathlib import Path
from typing import Any

from biencoder.protocol import Encoder


class Backend(StrEnum):
    TORCH = "torch"
    ONNX = "onnx"


def load_encoder(
    name_or_path: str | Path,
    backend: str = Backend.TORCH,
    precision: str = "fp32",
    device: str | None = None,
) -> Encoder:
    """Load a model (a name or a folder) with either runtime; both answer the Encoder protocol.

    ``backend="onnx"`` loads the folder's graph for ``precision`` ("fp32" or "int8") without
    importing torch; a folder without that graph gets one exported once (``runtime.graphs``, which
    does need torch). ``device`` applies to the torch backend only.
    """
    try:
        kind = Backend(backend)
    except ValueError:
        raise ValueError(
            f"unknown backend {backend!r}; valid: {', '.join(b.value for b in Backend)}"
        ) from None
    if kind is Backend.ONNX:
        from biencoder.resolve import resolve_model_path
        from biencoder.runtime import OnnxEncoder
        from biencoder.runtime.graphs import ensure_onnx

        return OnnxEncoder.load(ensure_onnx(resolve_model_path(name_or_path), precision), precision=precision)
    if precision != "fp32":
        raise ValueError(f"the torch backend runs fp32 only; for {precision} use backend='onnx'")
    from biencoder.encoder import SentenceEncoder

    return SentenceEncoder.load(name_or_path, device=device)


def add_backend_arguments(parser: Any) -> None:
    """``--backend`` and ``--precision`` for commands that encode."""
    parser.add_argument("--backend", choices=[b.value for b in Backend], default="torch", help="runtime")
    parser.add_argument(
        "--precision", choices=["fp32", "int8"], default="fp32", help="onnx backend: graph precision"
    )


def encoder_from_args(args: argparse.Namespace, model: str | Path | None = None) -> Encoder:
    return load_encoder(model or args.model, args.backend, args.precision, args.device)
