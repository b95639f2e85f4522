"""``biencoder serve``: an OpenAI- and TEI-compatible embedding server, with search over an index.

Every option can also be set by an environment variable, BIENCODER_<OPTION> (for example
BIENCODER_API_KEY, BIENCODER_MAX_BATCH_TOKENS); the command line wins over the environment.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any

from biencoder.serve.config import BACKENDS, PRECISIONS, ServeConfig

# field -> (flag, argparse keywords beyond the type)
_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "served_model_names": ("--served-model-name", {"action": "append", "metavar": "NAME"}),
    "backend": ("--backend", {"choices": BACKENDS}),
    "precision": ("--precision", {"choices": PRECISIONS}),
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve embeddings (and search) over HTTP",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in fields(ServeConfig):
        flag, extra = _FLAGS.get(f.name, ("--" + f.name.replace("_", "-"), {}))
        default = f.default if f.default is not MISSING else None
        shown = ", ".join(default) if isinstance(default, tuple) else default
        help_text = f"{f.metadata.get('help', '')} (default: {shown if shown not in ('', ()) else '-'}; "
        help_text += f"env {ServeConfig.env_name(f.name)})"
        kind = str(f.type)
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        if kind.startswith("int"):
            extra = {"type": int, **extra}
        elif kind.startswith("float"):
            extra = {"type": float, **extra}
        p.add_argument(flag, dest=f.name, default=None, help=help_text, **extra)
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="uvicorn's log level",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    overrides = {f.name: getattr(args, f.name) for f in fields(ServeConfig)}
    if overrides["served_model_names"] is not None:
        overrides["served_model_names"] = tuple(overrides["served_model_names"])
    return ServeConfig.from_env(**overrides)


def run(args: argparse.Namespace) -> int:
    from biencoder.serve.server import serve

    config = config_from_args(args)
    return serve(config, log_level=args.log_level, reuse_port=args.reuse_port)
