"""Building a store folder from a stream of (ids, vectors, texts) batches, for any backend.

The folder appears whole or not at all: it is built beside its final name and renamed; a
pgvector build fills a scratch table and takes the table's name in one transaction at the end,
so an interrupted build leaves the previous folder and table as they were.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.atomic import atomic_dir
from biencoder.index.config import FusionRecord
from biencoder.index.fusion_choice import PROBES, choose_fusion
from biencoder.index.lexical import LexicalConfig
from biencoder.stores.contract import BACKENDS, DATABASE_METRICS, Batch, check_identifier

logger = logging.getLogger(__name__)

KINDS = {
    "memory": ("exact", "hnsw"),
    "lancedb": ("exact", "ivf_pq", "ivf_hnsw_sq"),
    "pgvector": ("exact", "hnsw"),
}
DATABASE_LEXICAL = (
    "the {backend} backend's lexical part is the database's own full-text index, with its english "
    "analyser: the BM25 settings (language, stop words, k1, b, method) are the memory backend's; "
    "got {config}"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreSpec:
    """What to build. HNSW settings (``connectivity`` M, ``expansion_add`` efConstruction,
    ``expansion_search`` efSearch) apply to every HNSW kind; ``partitions``, ``sub_vectors``,
    ``nprobes`` and ``refine_factor`` to LanceDB's IVF kinds; ``quantization`` to the in-process
    index. ``lexical`` (from the batches' texts, for lexical and hybrid search) is a BM25 part of
    the in-process index, or the database's full-text index (then only the default
    ``LexicalConfig()``: the database's english analyser takes none of BM25's settings)."""

    backend: str = "memory"
    kind: str = "exact"
    metric: str = "cosine"
    quantization: str = "none"
    connectivity: int | None = None
    expansion_add: int | None = None
    expansion_search: int | None = None
    partitions: int | None = None
    sub_vectors: int | None = None
    nprobes: int = 20
    refine_factor: int | None = 10
    table: str = "vectors"
    dsn: str | None = field(default=None, repr=False)
    lance_uri: str | None = None
    lexical: LexicalConfig | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.lexical is not None and not isinstance(self.lexical, LexicalConfig):
            raise TypeError(f"lexical must be a LexicalConfig or None, got {type(self.lexical).__name__}")
        if self.lexical is not None and self.backend != "memory" and self.lexical != LexicalConfig():
            raise ValueError(DATABASE_LEXICAL.format(backend=self.backend, config=self.lexical))
        kinds = KINDS[self.backend]
        if self.kind not in kinds:
            raise ValueError(f"the {self.backend} backend builds {', '.join(kinds)}, not {self.kind!r}")
        if self.backend != "memory":
            if self.quantization != "none":
                raise ValueError(f"--quantization is the memory backend's; {self.backend} stores float32")
            if self.metric not in DATABASE_METRICS:
                raise ValueError(f"the {self.backend} backend ranks by cosine or dot, not {self.metric!r}")
            check_identifier(self.table)


def build_store(
    spec: StoreSpec, output: Path, batches: Iterable[Batch], *, dimension: int, model_name: str | None
) -> dict[str, float]:
    """Write the store folder at ``output``; returns timings (``ingest_s``, ``index_s``)."""
    if spec.backend == "memory":
        return _build_memory(spec, output, batches, dimension, model_name)
    if spec.backend == "lancedb":
        return _build_lance(spec, output, batches, dimension, model_name)
    return _build_pgvector(spec, output, batches, dimension, model_name)


def _build_memory(
    spec: StoreSpec, output: Path, batches: Iterable[Batch], dimension: int, model_name: str | None
) -> dict[str, float]:
    from biencoder.index import Index, IndexConfig

    hnsw = {
        name: value
        for name, value in (
            ("connectivity", spec.connectivity),
            ("expansion_add", spec.expansion_add),
            ("expansion_search", spec.expansion_search),
        )
        if value is not None
    }
    config = IndexConfig(metric=spec.metric, kind=spec.kind, quantization=spec.quantization, **hnsw)
    index = Index(dimension, config=config, model_name=model_name, lexical=spec.lexical)
    start = time.perf_counter()
    for ids, vectors, texts in batches:
        if spec.lexical is not None and texts is None:
            raise ValueError("a lexical part is built from the rows' texts, but a batch carries none")
        index.add(ids, vectors, texts=texts)  # the graph (and the BM25 tokens) built as rows come in
    built = time.perf_counter() - start
    index.save(output)
    return {"ingest_s": built, "index_s": 0.0}


def _build_lance(
    spec: StoreSpec, output: Path, batches: Iterable[Batch], dimension: int, model_name: str | None
) -> dict[str, float]:
    from biencoder.stores.lance import LanceStore

    with atomic_dir(output) as tmp:
        store = LanceStore.create(
            tmp,
            dimension=dimension,
            metric=spec.metric,
            model_name=model_name,
            table=spec.table,
            uri=spec.lance_uri,
        )
        start = time.perf_counter()
        rows = store.ingest(batches)
        ingest = time.perf_counter() - start
        index = 0.0
        if spec.kind != "exact":
            index = store.build_index(
                spec.kind,
                num_partitions=spec.partitions,
                num_sub_vectors=spec.sub_vectors,
                m=spec.connectivity or 20,
                ef_construction=spec.expansion_add or 300,
                nprobes=spec.nprobes,
                refine_factor=spec.refine_factor,
                ef=spec.expansion_search or 100,
            )
        if spec.lexical is not None:
            index += store.build_lexical()
        logger.info("LanceDB store of %d rows: ingest %.1f s, index %.1f s", rows, ingest, index)
    return {"ingest_s": ingest, "index_s": index}


def _build_pgvector(
    spec: StoreSpec, output: Path, batches: Iterable[Batch], dimension: int, model_name: str | None
) -> dict[str, float]:
    from biencoder.stores.pgvector import PgVectorStore

    scratch = f"{spec.table[:55]}__build"
    with atomic_dir(output) as tmp:
        store = PgVectorStore.create(
            tmp, dimension=dimension, dsn=spec.dsn, metric=spec.metric, model_name=model_name, table=scratch
        )
        try:
            start = time.perf_counter()
            rows = store.ingest(batches)
            ingest = time.perf_counter() - start
            index = 0.0
            if spec.kind == "hnsw":
                index = store.build_index(
                    "hnsw",
                    m=spec.connectivity or 16,
                    ef_construction=spec.expansion_add or 64,
                    ef_search=spec.expansion_search or 100,
                )
            if spec.lexical is not None:
                index += store.build_lexical()
            store.rename(spec.table)
        except BaseException:
            store.drop()
            raise
        finally:
            store.close()
        logger.info(
            "pgvector table %s of %d rows: COPY %.1f s, index %.1f s", spec.table, rows, ingest, index
        )
    return {"ingest_s": ingest, "index_s": index}


def choose_store_fusion(
    spec: StoreSpec,
    texts: Sequence[str | None],
    vectors_of: Callable[[NDArray[np.int64]], NDArray[np.float32]],
    encode: Callable[[list[str]], NDArray[np.float32]],
    *,
    dimension: int,
    probes: int = PROBES,
) -> FusionRecord:
    """The label-free fusion decision (:func:`biencoder.index.fusion_choice.choose_fusion`) for a
    store of ``spec``'s backend over ``texts``: its probe corpus goes into a scratch store of that
    backend (a temporary folder; on pgvector a ``__probe`` table, dropped after), so the decision
    weighs the database's own lexical ranker, as its hybrid search will."""
    scratch = replace(
        spec, kind="exact", quantization="none", table=f"{spec.table[:48]}__probe", lance_uri=None
    )
    opened: list[Any] = []

    def make_store(ids: list[str], vectors: NDArray[np.float32], rows: list[str]) -> Any:
        from biencoder.stores.folder import open_store

        if spec.backend == "memory":  # in memory: no folder to write
            from biencoder.index import Index, IndexConfig

            index = Index(dimension, config=IndexConfig(metric=spec.metric), lexical=spec.lexical)
            index.add(ids, vectors, texts=rows)
            return index
        folder = Path(work) / "probe"
        build_store(scratch, folder, [(ids, vectors, rows)], dimension=dimension, model_name=None)
        opened.append(open_store(folder, dsn=spec.dsn, mmap=False))
        return opened[-1]

    with tempfile.TemporaryDirectory(prefix="biencoder-probes-") as work:
        try:
            return choose_fusion(texts, vectors_of, encode, make_store, probes=probes)
        finally:
            for store in opened:
                if spec.backend == "pgvector":
                    store.drop()
                    store.close()
