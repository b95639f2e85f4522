"""The store contract: what the in-process ``Index``, a LanceDB table and a pgvector table all answer.

A store holds (id, vector[, text]) rows under string ids and searches them by the model's
similarity. The CLI's ``index``/``search`` commands and the server's search route depend on this
protocol alone. A store folder written by ``biencoder index`` says which backend it is: the
in-process index writes ``manifest.json``, the database backends ``store.json``
(:class:`StoreManifest`). Lexical and hybrid search need a lexical part: the in-process index's
BM25, or a database store's full-text index (``has_lexical``; see :mod:`biencoder.stores.hybrid`).
:func:`plan_search` checks a search's mode against the store once, for the CLI and the server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from biencoder import similarity as sim
from biencoder.atomic import atomic_file
from biencoder.index.config import FusionRecord, SearchResult
from biencoder.index.fusion import DEFAULT_CANDIDATES, SearchMode
from biencoder.index.hybrid import NO_LEXICAL_PART, SearchSettings, row_words
from biencoder.index.persist import read_fusion_record, write_fusion_file
from biencoder.protocol import Encoder

STORE_FILE = "store.json"
STORE_FORMAT = 1
BACKENDS = ("memory", "lancedb", "pgvector")
DATABASE_METRICS = ("cosine", "dot")  # what both databases rank by, with the Index's scores

Ids = str | int | Sequence[str | int]
NO_DATABASE_LEXICAL = (
    "this {backend} store has no lexical part (no full-text index over its texts): build it with "
    "`biencoder index --backend {backend} --lexical` for lexical and hybrid search, or search it "
    "in dense mode"
)


@runtime_checkable
class VectorStore(Protocol):
    """(id, vector) rows searched by similarity; ``add`` of an id already present replaces it."""

    backend: str

    @property
    def dimension(self) -> int | None: ...

    @property
    def count(self) -> int: ...

    @property
    def metric(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def has_texts(self) -> bool: ...

    def add(self, ids: Ids, data: Any, *, texts: Sequence[str] | None = None) -> None: ...

    def upsert(self, ids: Ids, data: Any, *, texts: Sequence[str] | None = None) -> None: ...

    def remove(self, ids: Ids) -> None: ...

    def search(self, queries: Any, k: int = 10) -> SearchResult: ...

    def texts_of(self, ids: Sequence[str]) -> list[str | None]: ...


class StoreFormatError(ValueError):
    """A store folder that is missing, incomplete or not written by this version."""


class SearchNotOffered(ValueError):
    """A search mode the store cannot run: lexical or hybrid on a store without a lexical part."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchPlan:
    """One search's mode, checked against the store, and the keywords its ``search`` takes for it."""

    mode: SearchMode
    keywords: Mapping[str, Any] = field(default_factory=dict)

    @property
    def encodes(self) -> bool:
        """Whether the queries are embedded: dense and hybrid search (lexical reads words only)."""
        return self.mode is not SearchMode.LEXICAL

    @property
    def reads_words(self) -> bool:
        """Whether the query words are searched: lexical and hybrid search."""
        return self.mode is not SearchMode.DENSE

    def search(self, store: Any, texts: Sequence[str], vectors: Any, k: int, **options: Any) -> SearchResult:
        """Run the plan on ``store``: the query ``texts`` and, unless lexical, their ``vectors``."""
        if self.encodes and vectors is None:
            raise ValueError(f"{self.mode.value} search needs the query vectors")
        words = {"query_texts": list(texts)} if self.encodes and self.reads_words else {}
        queries = vectors if self.encodes else list(texts)
        return store.search(queries, k, **self.keywords, **words, **options)


def plan_search(
    store: Any,
    *,
    k: int,
    mode: str | None = None,
    fusion: str | None = None,
    alpha: float | None = None,
    candidates: int = DEFAULT_CANDIDATES,
) -> SearchPlan:
    """Check a search's choices against ``store`` as its ``search`` would, before any encoding.

    ``mode`` None is hybrid on a store with a lexical part, else dense. Lexical or hybrid on a
    store without a lexical part raises :class:`SearchNotOffered`; a bad value (an unknown mode
    or fusion, alpha outside [0, 1] or with rrf, candidates < 1) a ``ValueError``. A store
    without a lexical part searches dense only and takes none of these keywords.
    """
    requested = None if mode is None else SearchMode.parse(mode)
    memory = store.backend == "memory"
    lexical = bool(getattr(store, "has_lexical", False))
    if requested not in (None, SearchMode.DENSE) and not lexical:
        raise SearchNotOffered(
            NO_LEXICAL_PART if memory else NO_DATABASE_LEXICAL.format(backend=store.backend)
        )
    settings = SearchSettings.resolve(
        k=k,
        mode=requested,
        fusion=fusion,
        alpha=alpha,
        normalization=None,
        candidates=candidates,
        has_lexical=lexical,
        record=getattr(store, "fusion_record", None),
    )
    if not lexical:
        return SearchPlan(mode=settings.mode)
    # the caller's own fusion and alpha, not the resolved ones: each store's search defaults them
    keywords = {"mode": settings.mode.value, "fusion": fusion, "alpha": alpha, "candidates": candidates}
    return SearchPlan(mode=settings.mode, keywords=keywords)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreManifest:
    """``store.json``: a database-backed store's settings (never a password: the DSN is not kept).

    ``has_lexical``: the table has a full-text index over its texts (lexical and hybrid search),
    built with ``lexical_params`` (the database's analyser settings, as built).
    """

    backend: str
    dimension: int
    metric: str = "cosine"
    model_name: str | None = None
    table: str = "vectors"
    kind: str = "exact"
    index_params: dict[str, Any] = field(default_factory=dict)
    search_params: dict[str, Any] = field(default_factory=dict)
    has_texts: bool = False
    has_lexical: bool = False
    lexical_params: dict[str, Any] = field(default_factory=dict)
    format: int = STORE_FORMAT

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS[1:]:
            raise ValueError(f"unknown store backend {self.backend!r}; valid: {', '.join(BACKENDS[1:])}")
        if isinstance(self.dimension, bool) or not isinstance(self.dimension, int) or self.dimension < 1:
            raise ValueError(f"dimension must be a positive integer, got {self.dimension!r}")
        if self.metric not in DATABASE_METRICS:
            raise ValueError(
                f"the {self.backend} backend ranks by {', '.join(DATABASE_METRICS)}, not {self.metric!r}"
            )
        check_identifier(self.table)
        if self.has_lexical and not self.has_texts:
            raise ValueError("has_lexical needs has_texts: a full-text index is built over the rows' texts")

    def write(self, folder: Path) -> None:
        with atomic_file(folder / STORE_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> StoreManifest:
        path = folder / STORE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreFormatError(
                f"{path}: not found; is {folder} a store written by biencoder index?"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreFormatError(f"{path}: unreadable ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise StoreFormatError(f"{path}: not a store manifest of format {STORE_FORMAT}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise StoreFormatError(f"{path}: unknown fields {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise StoreFormatError(f"{path}: {exc}") from None


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_identifier(name: str) -> str:
    """A table name both databases take unquoted: letters, digits, underscores, at most 63."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"table name {name!r} must be letters, digits and underscores (not first), <= 63")
    return name


def id_list(ids: Ids) -> list[str]:
    return [str(ids)] if isinstance(ids, str | int) else [str(i) for i in ids]


def check_rows(ids: list[str], n_vectors: int, texts: Sequence[str] | None) -> None:
    """The checks ``Index.add`` makes: one vector (and text) per id, no id twice in one add."""
    if len(ids) != n_vectors:
        raise ValueError(f"got {len(ids)} ids but {n_vectors} vectors")
    if texts is not None:
        if isinstance(texts, str) or len(texts) != len(ids):
            raise ValueError(f"texts must be a list of {len(ids)} strings, one per id")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate id {dup!r} within one add")


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k


def vectors_of(
    data: Any, *, encoder: Encoder | None, dimension: int, metric: str, what: str
) -> NDArray[np.float32]:
    """Texts (encoded with ``encoder``) or embeddings -> checked float32 [n, dim], normalised for cosine."""
    texts: list[str] | None = None
    if isinstance(data, str):
        texts = [data]
    elif isinstance(data, Sequence) and data and all(isinstance(t, str) for t in data):
        texts = list(data)
    if texts is not None:
        if encoder is None:
            raise ValueError(f"{what} are texts but the store has no encoder: pass encoder= or embeddings")
        data = encoder.encode(texts)
    elif isinstance(data, Sequence) and len(data) == 0:
        return np.zeros((0, dimension), dtype=np.float32)
    x = sim.as_matrix(data, what)
    if x.shape[1] != dimension:
        raise ValueError(f"dimension mismatch: {what} have dimension {x.shape[1]}, the store {dimension}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    if metric == "cosine":
        x = sim.normalize(x)
    return np.ascontiguousarray(x, dtype=np.float32)


Batch = tuple[list[str], NDArray[np.float32], Sequence[str] | None]  # ids, vectors [n, dim], texts


def parquet_vector_batches(paths: Sequence[Path], *, batch_rows: int = 8192) -> Iterator[Batch]:
    """Stream (ids, vectors [n, dim], None) from Parquet shards of ``id`` and ``vector`` (as
    ``biencoder encode --engine ray`` and ``Index.export_parquet`` write them): one batch in memory."""
    import pyarrow.parquet as pq

    for path in paths:
        f = pq.ParquetFile(path)
        names = f.schema_arrow.names
        if "id" not in names or "vector" not in names:
            raise StoreFormatError(f"{path}: needs columns 'id' and 'vector', has {names}")
        for batch in f.iter_batches(batch_size=batch_rows, columns=["id", "vector"]):
            column = batch.column("vector")
            width = getattr(column.type, "list_size", None)
            if width is None:  # a variable-size list: every row must still have the same length
                vectors = np.stack([np.asarray(v, dtype=np.float32) for v in column.to_pylist()])
            else:
                vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            ids = [str(i) for i in batch.column("id").to_pylist()]
            yield ids, vectors.astype(np.float32, copy=False), None


class ManifestStore:
    """What the database backends share: settings from ``store.json``, kept in step on change."""

    backend: str

    def __init__(self, folder: Path, manifest: StoreManifest, encoder: Encoder | None) -> None:
        self.folder = folder
        self.manifest = manifest
        self.encoder = encoder
        self.fusion_record: FusionRecord | None = read_fusion_record(folder)  # fusion.json, if any

    def set_fusion(self, record: FusionRecord | None) -> None:
        """Record the fusion hybrid search defaults to, in the folder's ``fusion.json`` (None: remove it)."""
        if record is not None and not isinstance(record, FusionRecord):
            raise TypeError(f"record must be a FusionRecord or None, got {type(record).__name__}")
        write_fusion_file(self.folder, record)
        self.fusion_record = record

    @classmethod
    def read_manifest(cls, folder: Path, encoder: Encoder | None) -> StoreManifest:
        """``folder``'s manifest, checked to be this backend's and to fit ``encoder``."""
        manifest = StoreManifest.read(folder)
        if manifest.backend != cls.backend:
            raise StoreFormatError(f"{folder}: a {manifest.backend} store, not {cls.backend}")
        if encoder is not None and encoder.dimension != manifest.dimension:
            raise ValueError(
                f"dimension mismatch: the store at {folder} holds {manifest.dimension}-dimensional "
                f"vectors (model {manifest.model_name!r}), the encoder gives {encoder.dimension}"
            )
        return manifest

    @property
    def dimension(self) -> int:
        return self.manifest.dimension

    @property
    def metric(self) -> str:
        return self.manifest.metric

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def model_name(self) -> str | None:
        return self.manifest.model_name

    @property
    def has_texts(self) -> bool:
        return self.manifest.has_texts

    @property
    def has_lexical(self) -> bool:
        """Whether the table has a full-text index: lexical and hybrid search."""
        return self.manifest.has_lexical

    @property
    def count(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.count

    def _vectors(self, data: Any, what: str, *, encode: bool = True) -> NDArray[np.float32]:
        encoder = self.encoder if encode else None
        return vectors_of(data, encoder=encoder, dimension=self.dimension, metric=self.metric, what=what)

    def _kept_texts(self, data: Any, texts: Sequence[str] | None) -> Sequence[str] | None:
        """The texts an add keeps: ``texts``; on a store with a lexical part they are needed (the
        full-text index reads them), so ``data`` when it is texts, else a ValueError."""
        if texts is not None or not self.has_lexical:
            return texts
        return row_words(data, None)

    def _note_texts(self) -> None:
        if not self.manifest.has_texts:
            self._rewrite(has_texts=True)

    def _rewrite(self, **changes: Any) -> None:
        self.manifest = replace(self.manifest, **changes)
        self.manifest.write(self.folder)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.folder}, table={self.manifest.table!r}, kind={self.kind})"
