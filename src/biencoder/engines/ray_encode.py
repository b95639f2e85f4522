"""Encoding a sharded corpus on Ray Data: ``biencoder encode --engine ray``.

Ray Data reads the Parquet or JSONL shards (BEIR's ``_id``/``title``/``text``, or a chosen
column), ``map_batches`` hands blocks of rows to a pool of actors that each load the encoder
once (on CPU the ONNX runtime, fp32 unless asked for int8; on GPU the PyTorch encoder), the
encoder sorts each block by length before batching it, and the driver writes one output Parquet
shard per input shard (``id``, ``vector`` as ``fixed_size_list<float32>[dim]``, the model and
dimension in the schema metadata), each to a temporary name and then renamed. A rerun skips the
shards already written, so an interrupted run resumes where it stopped.

Without ``address`` a local cluster is started: bound to loopback, no dashboard, a bounded
object store, one core kept for Ray's read tasks (an actor pool that takes every core of a
2-core machine starves them: ray issue 44687).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biencoder.atomic import atomic_file

logger = logging.getLogger(__name__)

INPUT_SUFFIXES = (".parquet", ".jsonl")
META_MODEL = b"biencoder.model"
META_DIM = b"biencoder.dimension"
META_SOURCE = b"biencoder.source"
META_PRECISION = b"biencoder.precision"


@dataclass(frozen=True, kw_only=True, slots=True)
class RayEncodeConfig:
    """One encoding run. ``cpus_per_actor`` is each actor's Ray CPU reservation and
    ``threads_per_actor`` its onnxruntime threads (defaults: on a local cluster, the cores shared
    among the actors with one core's reservation left to Ray's readers; on a cluster, 1 each)."""

    model: str
    output: Path
    column: str | None = None  # the text column; default: BEIR's title + " " + text
    id_column: str | None = None  # default: _id, else id
    address: str | None = None  # a Ray cluster; None: start a local one
    actors: int = 1
    cpus_per_actor: float | None = None
    threads_per_actor: int | None = None
    num_gpus_per_actor: float = 0.0
    precision: str = "fp32"  # onnx on CPU: fp32 (equal to sentence-transformers) or int8
    batch_size: int = 32  # texts per encoder call
    block_rows: int = 1024  # rows per map_batches call, sorted by length inside
    object_store_bytes: int = 512 * 2**20  # the local cluster's object store
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("actors", "batch_size", "block_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be fp32 or int8, got {self.precision!r}")
        if self.num_gpus_per_actor < 0 or (self.cpus_per_actor is not None and self.cpus_per_actor <= 0):
            raise ValueError("cpus_per_actor must be positive and num_gpus_per_actor not negative")
        if self.num_gpus_per_actor > 0 and self.precision != "fp32":
            raise ValueError("on GPU the PyTorch encoder runs fp32; int8 is the CPU (onnx) runtime's")


@dataclass(slots=True)
class EncodeReport:
    """What a run did; ``startup_s`` is cluster start-up plus the first block (actors loading the
    model), ``rows_per_s`` the throughput after it."""

    inputs: int = 0
    skipped: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    startup_s: float = 0.0
    rows_per_s: float = 0.0


def expand_inputs(spec: str | Path) -> list[Path]:
    """A folder (its .parquet and .jsonl files), a glob, or one file -> sorted shard paths."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.suffix.lower() in INPUT_SUFFIXES]
    elif any(c in text for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no input at {text}: give a folder, a glob or a file of shards")
    bad = [p for p in files if p.suffix.lower() not in INPUT_SUFFIXES]
    if bad:
        raise ValueError(f"{bad[0]}: input shards must be .parquet or .jsonl")
    if not files:
        raise FileNotFoundError(f"{text}: no .parquet or .jsonl shards there")
    return [p.resolve() for p in files]


def shard_name(source: Path) -> str:
    """The output shard of an input shard: its stem and a hash of its full path (stems may repeat)."""
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:10]
    return f"{source.stem}-{digest}.parquet"


def count_rows(source: Path) -> int:
    if source.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(source).num_rows)
    with source.open("rb") as f:
        return sum(1 for line in f if line.strip())


def check_columns(source: Path, column: str | None, id_column: str | None) -> None:
    """Fail before any work if a shard lacks the text or id column (Parquet schema, first JSONL line)."""
    if source.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = set(pq.read_schema(source).names)
    else:
        with source.open(encoding="utf-8") as f:
            line = next((raw for raw in f if raw.strip()), None)
        if line is None:
            return  # an empty shard: an empty output shard
        try:
            first = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: the first line is not JSON ({exc})") from None
        names = set(first) if isinstance(first, dict) else set()
    text = column or "text"
    ids = [id_column] if id_column else ["_id", "id"]
    if text not in names:
        raise ValueError(f"{source}: no text column {text!r}; columns are {sorted(names)}")
    if not any(i in names for i in ids):
        raise ValueError(f"{source}: no id column ({' or '.join(ids)}); columns are {sorted(names)}")


def finished(shard: Path, model: str, precision: str) -> bool:
    """Whether ``shard`` is a complete output of ``model`` at ``precision`` (an unreadable one is redone)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(shard).metadata or {}
    except (OSError, ValueError):
        logger.warning("%s is unreadable: encoding it again", shard)
        return False
    made = (meta.get(META_MODEL, b"?").decode(), meta.get(META_PRECISION, b"?").decode())
    if made != (model, precision):
        raise ValueError(
            f"{shard} was written by model {made[0]!r} at {made[1]}, not {model!r} at {precision}: "
            "use another --output folder"
        )
    return True


class ShardEncoder:
    """The actor: loads the encoder once, then turns blocks of rows into (id, vector, path)."""

    def __init__(
        self,
        *,
        folder: str,
        precision: str,
        threads: int,
        gpu: bool,
        column: str | None,
        id_column: str | None,
        batch_size: int,
    ) -> None:
        if gpu:
            from biencoder.encoder import SentenceEncoder

            self.encoder: Any = SentenceEncoder.load(folder, device="cuda")
        else:
            from biencoder.runtime import OnnxEncoder

            self.encoder = OnnxEncoder.load(folder, precision=precision, threads=threads, spin=False)
        self.column = column
        self.id_column = id_column
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = block_texts(batch, self.column)
        ids = block_ids(batch, self.id_column)
        vectors = self.encoder.encode(texts, batch_size=self.batch_size, show_progress=False)
        return {"id": ids, "vector": np.asarray(vectors, dtype=np.float32), "path": batch["path"]}


def block_texts(batch: dict[str, np.ndarray], column: str | None) -> list[str]:
    """The texts of a block: ``column``, or BEIR's title + " " + text (as sentence-transformers has it)."""
    name = column or "text"
    if name not in batch:
        raise ValueError(f"the input has no column {name!r}; columns are {sorted(batch)}")
    values = batch[name]
    titles = batch.get("title") if column is None else None
    texts = []
    for n, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"{batch['path'][n]}: a row's {name!r} is {type(value).__name__}, not a string")
        title = titles[n] if titles is not None else None
        texts.append(f"{title} {value}".strip() if title else value)
    return texts


def block_ids(batch: dict[str, np.ndarray], id_column: str | None) -> list[str]:
    key = id_column or next((c for c in ("_id", "id") if c in batch), None)
    if key is None or key not in batch:
        raise ValueError(
            f"the input has no id column ({id_column or '_id or id'}); columns are {sorted(batch)}"
        )
    return [str(v) for v in batch[key]]


def encode_on_ray(
    inputs: list[Path], config: RayEncodeConfig, *, on_shard: Callable[[str], None] | None = None
) -> EncodeReport:
    """Encode every input shard not yet in ``config.output``; ``on_shard`` is told each shard written."""
    from biencoder.resolve import resolve_model_path

    started = time.perf_counter()
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # a previous run stopped while writing: never taken for a shard
        stale.unlink()
    report = EncodeReport(inputs=len(inputs))
    pending = []
    for source in inputs:
        shard = out / shard_name(source)
        if shard.is_file() and finished(shard, config.model, config.precision):
            report.skipped.append(shard.name)
        else:
            pending.append(source)
    if report.skipped:
        logger.info("%d of %d shards already encoded in %s: skipped", len(report.skipped), len(inputs), out)
    if not pending:
        report.seconds = time.perf_counter() - started
        return report
    folder = resolve_model_path(config.model)
    gpu = config.num_gpus_per_actor > 0
    if not gpu:  # export the graph once here, not in every actor (actors never import torch)
        from biencoder.runtime.graphs import ensure_onnx

        folder = ensure_onnx(folder, config.precision)
    for source in pending:
        check_columns(source, config.column, config.id_column)
    expected = {str(p): count_rows(p) for p in pending}
    start_ray(config)
    dataset = _pipeline(pending, expected, config, str(folder), gpu)
    _collect(dataset, expected, config, report, on_shard, started)
    report.seconds = time.perf_counter() - started
    return report


def start_ray(config: RayEncodeConfig) -> None:
    """Connect to ``config.address``, or start the local cluster (see the module docstring)."""
    import ray

    if ray.is_initialized():
        return
    if config.address:
        ray.init(address=config.address, log_to_driver=False)
        return
    ray.init(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        object_store_memory=config.object_store_bytes,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )


def _actor_resources(config: RayEncodeConfig) -> tuple[float, int]:
    """(Ray CPUs reserved per actor, onnxruntime threads per actor)."""
    import ray

    if config.address:
        cpus = config.cpus_per_actor or 1.0
        return cpus, config.threads_per_actor or max(1, int(cpus))
    total = float(ray.cluster_resources().get("CPU", 1.0))
    cpus = config.cpus_per_actor or max(total - 1.0, 0.25) / config.actors
    threads = config.threads_per_actor or max(1, int(total) // config.actors)
    return cpus, threads


def _pipeline(
    pending: list[Path], expected: dict[str, int], config: RayEncodeConfig, folder: str, gpu: bool
) -> Any:
    import ray.data

    def blocks(paths: list[str]) -> int:
        return max(len(paths), -(-sum(expected[p] for p in paths) // config.block_rows))

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards complete one after another
    context.enable_progress_bars = config.progress
    # Blocks of about block_rows rows: Ray's Parquet reader would make one block of many small
    # files (and ignores override_num_blocks), leaving one actor busy and the others idle.
    rows = sum(expected.values())
    context.target_max_block_size = max(64 * 1024, _bytes_per_row(pending, rows) * config.block_rows)
    parts = []
    parquet = [str(p) for p in pending if p.suffix.lower() == ".parquet"]
    jsonl = [str(p) for p in pending if p.suffix.lower() == ".jsonl"]
    if parquet:
        parts.append(ray.data.read_parquet(parquet, include_paths=True, override_num_blocks=blocks(parquet)))
    if jsonl:
        parts.append(ray.data.read_json(jsonl, include_paths=True, override_num_blocks=blocks(jsonl)))
    dataset = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    cpus, threads = _actor_resources(config)
    return dataset.map_batches(
        ShardEncoder,
        fn_constructor_kwargs={
            "folder": folder,
            "precision": config.precision,
            "threads": threads,
            "gpu": gpu,
            "column": config.column,
            "id_column": config.id_column,
            "batch_size": config.batch_size,
        },
        batch_size=config.block_rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=cpus if not gpu else None,
        num_gpus=config.num_gpus_per_actor or None,
    )


def _bytes_per_row(pending: list[Path], rows: int) -> int:
    """The inputs' uncompressed bytes per row (Parquet's own count; a JSONL file's size)."""
    import pyarrow.parquet as pq

    total = 0
    for source in pending:
        if source.suffix.lower() == ".parquet":
            meta = pq.read_metadata(source)
            total += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        else:
            total += source.stat().st_size
    return max(1, total // max(rows, 1))


def _collect(
    dataset: Any,
    expected: dict[str, int],
    config: RayEncodeConfig,
    report: EncodeReport,
    on_shard: Callable[[str], None] | None,
    started: float,
) -> None:
    """Gather the actors' rows per input shard; write each shard as soon as all its rows are in."""
    held: dict[str, list[tuple[list[str], np.ndarray]]] = {}
    have = dict.fromkeys(expected, 0)
    first_at = None
    first_rows = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if first_at is None:
            first_at, first_rows = time.perf_counter(), len(batch["id"])
            report.startup_s = first_at - started
        paths = batch["path"]
        for source in dict.fromkeys(paths.tolist()):
            rows = paths == source
            held.setdefault(source, []).append(
                ([str(i) for i in batch["id"][rows]], np.asarray(batch["vector"][rows], dtype=np.float32))
            )
            have[source] += int(rows.sum())
            if have[source] == expected[source]:
                name = _write_shard(Path(source), held.pop(source), config)
                report.written.append(name)
                report.rows += expected[source]
                if on_shard is not None:
                    on_shard(name)
            elif have[source] > expected[source]:
                raise ValueError(f"{source}: got {have[source]} rows, counted {expected[source]}")
    unfinished = sorted(s for s, n in have.items() if n != expected[s])
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} shards did not come back whole, e.g. {unfinished[0]}")
    if first_at is not None:
        elapsed = time.perf_counter() - first_at
        report.rows_per_s = (report.rows - first_rows) / elapsed if elapsed > 0 else 0.0


def _write_shard(source: Path, parts: list[tuple[list[str], np.ndarray]], config: RayEncodeConfig) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [i for chunk, _ in parts for i in chunk]
    vectors = np.concatenate([v for _, v in parts]).astype(np.float32, copy=False)
    dim = int(vectors.shape[1])
    meta = {
        META_MODEL: config.model.encode(),
        META_DIM: str(dim).encode(),
        META_SOURCE: str(source).encode(),
        META_PRECISION: config.precision.encode(),
    }
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))], metadata=meta)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        },
        schema=schema,
    )
    name = shard_name(source)
    with atomic_file(config.output / name) as tmp:
        pq.write_table(table, tmp)
    logger.info("wrote %s: %d vectors from %s", name, len(ids), source)
    return name
