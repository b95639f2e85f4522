"""``biencoder index``: embed a corpus into a store folder; an interrupted build resumes.

``--backend memory`` (default) writes the in-process index, ``lancedb`` an embedded LanceDB
table in the folder, ``pgvector`` a PostgreSQL table (the folder records which; ``--dsn`` or
BIENCODER_PG_DSN connects). Embeddings are written in shards to ``<output>.partial/`` with a
progress manifest; a rerun of the same command (same corpus file, model and settings) skips the
finished shards. ``--vectors`` ingests Parquet shards of ``id``/``vector`` instead (what
``biencoder encode --engine ray`` writes), streamed, without encoding. The store itself is
assembled at the end and appears whole (see ``biencoder.stores.build``). ``--lexical`` (with
``--corpus``) adds a lexical part over the same texts, for lexical and hybrid search: a BM25 part
on the memory backend, the database's own full-text index on lancedb (its native FTS index) and
pgvector (a generated tsvector column with a GIN index); the texts are then kept in the store too.
Hybrid search's default fusion is then decided for the corpus without labels, on probes cut from
its texts and searched with the store's own rankers, and kept in ``fusion.json`` with its evidence
(:mod:`biencoder.index.fusion_choice`; ``--fusion-probes 0`` skips it).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biencoder.data import DataFormatError

if TYPE_CHECKING:
    from biencoder.index.lexical import LexicalConfig
    from biencoder.stores.build import StoreSpec
    from biencoder.stores.contract import Batch

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("index", help="build a search index from a corpus file", description=__doc__)
    p.add_argument(
        "--model", "-m", default="sentence-transformers/all-MiniLM-L6-v2", help="model name or folder"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--corpus",
        "-c",
        help="BEIR corpus.jsonl (_id, title, text), other .jsonl, .txt (one a line), .csv, .tsv or .parquet",
    )
    source.add_argument("--vectors", help="a folder or glob of Parquet shards of id and vector (no encoding)")
    p.add_argument("--output", "-o", required=True, help="store folder to write")
    p.add_argument("--backend", choices=["memory", "lancedb", "pgvector"], default="memory")
    p.add_argument("--field", help="text field or column (default: text)")
    p.add_argument(
        "--id-field", help="id field or column (default: _id or id if present, else the row number)"
    )
    p.add_argument(
        "--kind",
        choices=["exact", "hnsw", "ivf_pq", "ivf_hnsw_sq"],
        default="exact",
        help="exact search, or an ANN index: hnsw (memory, pgvector), ivf_pq or ivf_hnsw_sq (lancedb)",
    )
    p.add_argument("--quantization", choices=["none", "int8", "binary"], default="none", help="memory only")
    p.add_argument("--metric", help="cosine, dot, euclidean, manhattan (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=10_000, help="texts per resumable shard")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument(
        "--restart", action="store_true", help="discard an unfinished build instead of resuming it"
    )
    p.add_argument(
        "--store-texts",
        action="store_true",
        help="keep each text in the index (search and the server return it)",
    )
    ann = p.add_argument_group("ANN index settings")
    ann.add_argument("--connectivity", type=int, help="HNSW M (memory 32, lancedb 20, pgvector 16)")
    ann.add_argument("--expansion-add", type=int, help="HNSW efConstruction (200 / 300 / 64)")
    ann.add_argument("--expansion-search", type=int, help="HNSW efSearch kept for searches (128 / 100 / 100)")
    ann.add_argument("--partitions", type=int, help="lancedb IVF partitions (default: about sqrt(rows))")
    ann.add_argument("--sub-vectors", type=int, help="lancedb PQ sub-vectors (default: dim/8 or less)")
    ann.add_argument("--nprobes", type=int, default=20, help="lancedb IVF partitions searched")
    ann.add_argument(
        "--refine-factor", type=int, default=10, help="lancedb: rescore k*this with full vectors"
    )
    lex = p.add_argument_group(
        "lexical part (for lexical and hybrid search: BM25 on memory, the database's full-text index "
        "on lancedb and pgvector; the BM25 settings are the memory backend's)"
    )
    lex.add_argument(
        "--lexical",
        action="store_true",
        help="also index the texts for lexical search (keeps the texts, as --store-texts does); "
        "needs --corpus",
    )
    lex.add_argument(
        "--lexical-language", help="stemmer language, or none (default: english)", metavar="LANGUAGE"
    )
    lex.add_argument("--lexical-stopwords", help="stop-word list: en, de, ..., or none (default: en)")
    lex.add_argument("--bm25-k1", type=float, help="BM25 term-frequency saturation, > 0 (default: 1.5)")
    lex.add_argument("--bm25-b", type=float, help="BM25 length normalisation, in [0, 1] (default: 0.75)")
    lex.add_argument(
        "--fusion-probes",
        type=int,
        default=256,
        metavar="N",
        help="hybrid search's default fusion is decided without labels on N probes cut from the "
        "corpus (kept in fusion.json; see biencoder.index.fusion_choice); 0: no decision, the "
        "untuned default (default: 256)",
    )
    db = p.add_argument_group("database backends")
    db.add_argument("--dsn", help="pgvector: PostgreSQL connection (default: $BIENCODER_PG_DSN)")
    db.add_argument("--table", default="vectors", help="table name (lancedb, pgvector)")
    db.add_argument(
        "--lance-uri", help="lancedb: the database elsewhere (s3://..., a path); default: in the folder"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from biencoder.stores.build import StoreSpec, build_store

    if args.shard_size < 1 or args.batch_size < 1:
        raise ValueError("--shard-size and --batch-size must be positive")
    if args.fusion_probes < 0:
        raise ValueError(f"--fusion-probes must be 0 (no decision) or positive, got {args.fusion_probes}")
    lexical = _lexical_config(args)
    spec = StoreSpec(
        backend=args.backend,
        kind=args.kind,
        metric=args.metric or "cosine",
        quantization=args.quantization,
        connectivity=args.connectivity,
        expansion_add=args.expansion_add,
        expansion_search=args.expansion_search,
        partitions=args.partitions,
        sub_vectors=args.sub_vectors,
        nprobes=args.nprobes,
        refine_factor=args.refine_factor,
        table=args.table,
        dsn=args.dsn,
        lance_uri=args.lance_uri,
        lexical=lexical,
    )
    output = Path(args.output)
    if args.vectors is not None:
        return _from_vectors(args, spec, output)
    corpus = Path(args.corpus)
    ids, texts = read_corpus(corpus, args.field, args.id_field)
    if not texts:
        raise ValueError(f"{corpus}: no texts to index")
    from biencoder.encoder import SentenceEncoder

    model_name = str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model
    model = SentenceEncoder.load(args.model, device=args.device)
    if args.metric is None:
        from dataclasses import replace

        spec = replace(spec, metric=model.similarity_fn_name)
    work = output.with_name(output.name + ".partial")
    progress = {
        "corpus": str(corpus.resolve()),
        "corpus_bytes": corpus.stat().st_size,
        "corpus_mtime_ns": corpus.stat().st_mtime_ns,
        "model": model_name,
        "count": len(texts),
        "shard_size": args.shard_size,
        "dim": model.dimension,
    }
    _prepare_work(work, progress, args.restart)
    _embed_shards(model, texts, work, args.shard_size, args.batch_size)

    def batches() -> Iterator[Batch]:
        import numpy as np

        for n, start in enumerate(range(0, len(texts), args.shard_size)):
            part = slice(start, start + args.shard_size)
            vectors = np.load(work / f"shard_{n:05d}.npy")
            keep = args.store_texts or lexical is not None  # the lexical part is built from the texts
            yield ids[part], vectors, texts[part] if keep else None

    times = build_store(spec, output, batches(), dimension=model.dimension, model_name=model_name)
    if lexical is not None and args.fusion_probes > 0:
        _choose_fusion(spec, output, model, texts, work, args)
    shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "indexed %d texts from %s into %s (%s, %s): ingest %.1f s, index %.1f s",
        len(texts),
        corpus,
        output,
        spec.backend,
        spec.kind,
        times["ingest_s"],
        times["index_s"],
    )
    return 0


def _choose_fusion(
    spec: StoreSpec, output: Path, model: Any, texts: list[str], work: Path, args: argparse.Namespace
) -> None:
    """Decide hybrid search's default fusion on probes cut from the corpus, with the built
    store's backend, and record it in the folder (``fusion.json``; ``tune-fusion`` overrides it)."""
    import numpy as np

    from biencoder.index.persist import write_fusion_file
    from biencoder.stores.build import choose_store_fusion

    def vectors_of(rows: Any) -> Any:
        out = np.zeros((len(rows), model.dimension), dtype=np.float32)
        shard = np.asarray(rows) // args.shard_size
        for n in np.unique(shard):
            vectors = np.load(work / f"shard_{n:05d}.npy", mmap_mode="r")
            picked = shard == n
            out[picked] = vectors[np.asarray(rows)[picked] - n * args.shard_size]
        return out

    def encode(batch: list[str]) -> Any:
        return model.encode(batch, batch_size=args.batch_size, show_progress=False)

    record = choose_store_fusion(
        spec, texts, vectors_of, encode, dimension=model.dimension, probes=args.fusion_probes
    )
    write_fusion_file(output, record)
    evidence = record.evidence or {}
    logger.info("hybrid fusion chosen in %.1f s: %s", evidence.get("seconds", 0.0), evidence.get("reason"))


def _lexical_config(args: argparse.Namespace) -> LexicalConfig | None:
    """The lexical part's settings (LexicalConfig's defaults where a flag is not given), or None."""
    settings = {
        "language": ("--lexical-language", args.lexical_language),
        "stopwords": ("--lexical-stopwords", args.lexical_stopwords),
        "k1": ("--bm25-k1", args.bm25_k1),
        "b": ("--bm25-b", args.bm25_b),
    }
    given = {name: value for name, (_, value) in settings.items() if value is not None}
    if not args.lexical:
        if given:
            flags = ", ".join(settings[name][0] for name in given)
            raise ValueError(f"{flags} set up the lexical part: add --lexical to build one")
        return None
    if args.backend != "memory" and given:
        flags = ", ".join(settings[name][0] for name in given)
        raise ValueError(
            f"{flags} set up the memory backend's BM25; the {args.backend} backend's lexical part is "
            "the database's full-text index, with its own english analyser"
        )
    if args.vectors is not None:
        raise ValueError(
            "--lexical needs --corpus: vector shards carry no texts to build the lexical part from"
        )
    from biencoder.index.lexical import LexicalConfig

    return LexicalConfig(**given)


def _from_vectors(args: argparse.Namespace, spec: StoreSpec, output: Path) -> int:
    """Ingest Parquet shards of id/vector (``biencoder encode --engine ray`` output), streamed."""
    import pyarrow.parquet as pq

    from biencoder.engines.ray_encode import META_MODEL
    from biencoder.stores.build import build_store
    from biencoder.stores.contract import parquet_vector_batches

    if args.store_texts:
        raise ValueError("--store-texts needs --corpus: vector shards carry no texts")
    paths = _vector_shards(args.vectors)
    schema = pq.read_schema(paths[0])
    field = schema.field("vector") if "vector" in schema.names else None
    dimension = getattr(field.type, "list_size", None) if field is not None else None
    if not dimension or dimension < 1:
        raise DataFormatError(f"{paths[0]}: needs a 'vector' column of fixed_size_list<float32>[dim]")
    recorded = (schema.metadata or {}).get(META_MODEL)
    model_name = recorded.decode() if recorded else args.model
    times = build_store(
        spec, output, parquet_vector_batches(paths), dimension=dimension, model_name=model_name
    )
    logger.info(
        "ingested %d shards into %s (%s, %s): ingest %.1f s, index %.1f s",
        len(paths),
        output,
        spec.backend,
        spec.kind,
        times["ingest_s"],
        times["index_s"],
    )
    return 0


def _vector_shards(spec: str) -> list[Path]:
    import glob

    path = Path(spec)
    if path.is_dir():
        paths = sorted(path.glob("*.parquet"))
    elif any(c in spec for c in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
    else:
        paths = [path] if path.is_file() else []
    if not paths:
        raise FileNotFoundError(f"no Parquet vector shards at {spec}")
    return paths


def _prepare_work(work: Path, progress: dict[str, Any], restart: bool) -> None:
    manifest = work / "progress.json"
    if work.exists() and not restart:
        try:
            previous = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous == progress:
            done = len(list(work.glob("shard_*.npy")))
            logger.info("resuming the build in %s: %d shards already done", work, done)
            return
        raise ValueError(
            f"{work} holds an unfinished build of another corpus, model or shard size; "
            "rerun with --restart to discard it"
        )
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    from biencoder.atomic import atomic_file

    with atomic_file(manifest) as tmp:
        tmp.write_text(json.dumps(progress, indent=2) + "\n")


def _embed_shards(model: Any, texts: list[str], work: Path, shard_size: int, batch_size: int) -> None:
    import numpy as np

    from biencoder.atomic import atomic_file
    from biencoder.progress import Progress

    starts = list(range(0, len(texts), shard_size))
    todo = [n for n in range(len(starts)) if not (work / f"shard_{n:05d}.npy").is_file()]
    done = len(texts) - sum(len(texts[starts[n] : starts[n] + shard_size]) for n in todo)
    show = None if logger.isEnabledFor(logging.INFO) else False
    with Progress(len(texts), "Indexing", "text", initial=done, show=show) as bar:
        for n in todo:
            chunk = texts[starts[n] : starts[n] + shard_size]
            emb = model.encode(chunk, batch_size=batch_size, normalize=None, show_progress=False)
            with atomic_file(work / f"shard_{n:05d}.npy") as tmp, tmp.open("wb") as f:
                np.save(f, np.asarray(emb, dtype=np.float32), allow_pickle=False)
            bar.update(len(chunk))


def read_corpus(path: Path, field: str | None, id_field: str | None) -> tuple[list[str], list[str]]:
    """(ids, texts). BEIR corpus.jsonl: ``_id`` and title + " " + text; other files: a text column
    and an id column (``--id-field``, else ``_id``/``id`` when present, else the row number)."""
    from biencoder.data.beir import doc_text
    from biencoder.data.texts import read_jsonl, read_texts

    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        ids: list[str] = []
        texts: list[str] = []
        for number, obj in read_jsonl(path):
            key = id_field or ("_id" if "_id" in obj else "id" if "id" in obj else None)
            if id_field and id_field not in obj:
                raise DataFormatError(f"{path}:{number}: missing id field {id_field!r}")
            ids.append(str(obj[key]) if key else str(len(ids)))
            if field is not None:
                value = obj.get(field)
                if not isinstance(value, str):
                    raise DataFormatError(f"{path}:{number}: field {field!r} is missing or not a string")
                texts.append(value)
            else:
                if not isinstance(obj.get("text"), str):
                    raise DataFormatError(f"{path}:{number}: field 'text' is missing or not a string")
                texts.append(doc_text(obj))
    else:
        texts = read_texts(path, field)
        ids = _table_ids(path, id_field, len(texts))
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise DataFormatError(f"{path}: duplicate id {dup!r}")
    return ids, texts


def _table_ids(path: Path, id_field: str | None, n: int) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if id_field:
            raise ValueError("--id-field does not apply to .txt corpora (ids are row numbers)")
        return [str(i) for i in range(n)]
    columns = _columns(path)
    key = id_field or next((c for c in ("_id", "id") if c in columns), None)
    if key is None:
        return [str(i) for i in range(n)]
    if key not in columns:
        raise DataFormatError(f"{path}: no id column {key!r}; columns are {columns}")
    from biencoder.data.texts import read_texts

    return [str(v) for v in read_texts(path, key)]


def _columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import csv

    with path.open(encoding="utf-8", newline="") as f:
        return next(csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])
