"""``biencoder encode``: embed a file of texts into .npy or .parquet, or (``--engine ray``) a
folder or glob of Parquet/JSONL shards into a folder of Parquet shards on a Ray cluster.

With ``--engine ray`` each input shard becomes one output shard (``id``, ``vector``), written to
a temporary name and renamed; a rerun skips the shards already written. On CPU the actors run
the ONNX runtime (``--precision fp32`` by default, equal to sentence-transformers; ``int8`` to
opt in), with ``--num-gpus-per-actor`` the PyTorch encoder on GPU; ``--backend`` is not used.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    from biencoder.loading import add_backend_arguments

    p = sub.add_parser("encode", help="embed a file of texts", description=__doc__)
    p.add_argument(
        "--model", "-m", default="sentence-transformers/all-MiniLM-L6-v2", help="model name or folder"
    )
    p.add_argument(
        "--input",
        "-i",
        required=True,
        help="texts: .txt (one a line), .jsonl, .csv, .tsv or .parquet; --engine ray: folder or glob",
    )
    p.add_argument(
        "--output", "-o", required=True, help="embeddings: .npy or .parquet; --engine ray: a folder"
    )
    p.add_argument("--field", "--column", dest="field", help="JSON field or table column (default: text)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-normalize", action="store_true", help="skip the model's Normalize module")
    add_backend_arguments(p)
    ray = p.add_argument_group("--engine ray")
    ray.add_argument("--engine", choices=["local", "ray"], default="local", help="this process, or Ray Data")
    ray.add_argument("--ray-address", help="a Ray cluster (default: start a local one on loopback)")
    ray.add_argument("--actors", type=int, default=1, help="encoder actors (each loads the model once)")
    ray.add_argument("--cpus-per-actor", type=float, help="Ray CPUs per actor (default: see the docs)")
    ray.add_argument("--threads-per-actor", type=int, help="onnxruntime threads per actor")
    ray.add_argument("--num-gpus-per-actor", type=float, default=0.0, help="> 0: PyTorch on GPU")
    ray.add_argument("--block-rows", type=int, default=1024, help="rows per actor call (length-sorted)")
    ray.add_argument("--id-column", help="id column of the shards (default: _id, else id)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return run_ray(args)
    from biencoder.data.texts import read_texts, write_embeddings
    from biencoder.loading import encoder_from_args

    texts = read_texts(args.input, args.field)
    model = encoder_from_args(args)
    show = None if logger.isEnabledFor(logging.INFO) else False
    normalize = False if args.no_normalize else None
    stats = getattr(model, "encode_with_stats", None)  # the torch runtime also reports truncation
    if stats is not None:
        result = stats(texts, batch_size=args.batch_size, normalize=normalize, show_progress=show)
        embeddings = result.embeddings
        logger.info(
            "%d of %d inputs were truncated to %d tokens",
            result.num_truncated,
            len(texts),
            getattr(model, "max_seq_length", 0),
        )
    else:
        embeddings = model.encode(texts, batch_size=args.batch_size, normalize=normalize, show_progress=show)
    write_embeddings(args.output, embeddings, texts if args.output.endswith(".parquet") else None)
    logger.info("wrote %d x %d embeddings to %s", *embeddings.shape, args.output)
    return 0


def run_ray(args: argparse.Namespace) -> int:
    from pathlib import Path

    from biencoder.engines.ray_encode import RayEncodeConfig, encode_on_ray, expand_inputs

    inputs = expand_inputs(args.input)
    config = RayEncodeConfig(
        model=args.model,
        output=Path(args.output),
        column=args.field,
        id_column=args.id_column,
        address=args.ray_address,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        threads_per_actor=args.threads_per_actor,
        num_gpus_per_actor=args.num_gpus_per_actor,
        precision=args.precision,
        batch_size=args.batch_size,
        block_rows=args.block_rows,
        progress=logger.isEnabledFor(logging.INFO),
    )
    report = encode_on_ray(inputs, config)
    logger.info(
        "%d shards: %d written (%d vectors), %d already done; %.1f s (start-up %.1f s, then %.1f rows/s)",
        report.inputs,
        len(report.written),
        report.rows,
        len(report.skipped),
        report.seconds,
        report.startup_s,
        report.rows_per_s,
    )
    return 0
