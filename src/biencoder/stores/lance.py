"""LanceDB (embedded, on local disk or object storage) behind the store contract.

The folder holds ``store.json`` and the LanceDB database (``lance/``); a ``uri`` given at
creation puts the database elsewhere (``s3://...``, ``gs://...``) and is kept in the manifest.
Without a vector index every search is exact (a flat scan); ``build_index`` makes an IVF_PQ or
IVF_HNSW_SQ index, and its searches take ``nprobes``, ``refine_factor`` (rescoring the
``k * refine_factor`` best with the full vectors) and, for HNSW, ``ef``.

``build_lexical`` adds LanceDB's native full-text index (its own inverted index, not tantivy) over
the ``text`` column, for lexical and hybrid search (:mod:`biencoder.stores.hybrid`). Rows written
after it was built (``add``/``upsert``) are searched too, by a flat scan of the unindexed rows
until ``optimize`` folds them in; ``remove`` is seen at once (LanceDB's deletion vectors).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from biencoder.index.config import SearchResult
from biencoder.index.fusion import DEFAULT_CANDIDATES
from biencoder.protocol import Encoder
from biencoder.stores.contract import (
    Batch,
    Ids,
    ManifestStore,
    StoreFormatError,
    StoreManifest,
    check_k,
    check_rows,
    id_list,
)
from biencoder.stores.hybrid import Candidates, database_settings, run_search

logger = logging.getLogger(__name__)

LANCE_KINDS = ("exact", "ivf_pq", "ivf_hnsw_sq")
_SQL_CHUNK = 1000  # ids per IN (...) list
# the full-text analyser: LanceDB's defaults, English stemming and stop words, spelled out so the
# manifest records what was built
FTS_SETTINGS: dict[str, Any] = {
    "base_tokenizer": "simple",
    "language": "English",
    "stem": True,
    "remove_stop_words": True,
    "lower_case": True,
    "ascii_folding": True,
}


def _lancedb() -> Any:
    try:
        import lancedb
    except ImportError as exc:
        raise ImportError("the LanceDB backend needs lancedb: pip install 'biencoder[stores]'") from exc
    return lancedb


def _sql_in(ids: Sequence[str]) -> str:
    quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
    return f"id IN ({quoted})"


class LanceStore(ManifestStore):
    """A LanceDB table of ``id`` (string), ``vector`` (fixed_size_list<float32>[dim]) and ``text``."""

    backend = "lancedb"

    def __init__(self, folder: Path, manifest: StoreManifest, table: Any, encoder: Encoder | None) -> None:
        super().__init__(folder, manifest, encoder)
        self._table = table

    # --- opening -------------------------------------------------------------------------
    @staticmethod
    def database_uri(folder: Path, manifest: StoreManifest) -> str:
        return str(manifest.index_params.get("uri") or folder / "lance")

    @classmethod
    def create(
        cls,
        folder: str | Path,
        *,
        dimension: int,
        metric: str = "cosine",
        model_name: str | None = None,
        table: str = "vectors",
        uri: str | None = None,
        encoder: Encoder | None = None,
    ) -> LanceStore:
        """A new, empty store at ``folder`` (an existing table of that name is replaced)."""
        import pyarrow as pa

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        params = {"uri": uri} if uri else {}
        manifest = StoreManifest(
            backend="lancedb",
            dimension=dimension,
            metric=metric,
            model_name=model_name,
            table=table,
            index_params=params,
        )
        schema = pa.schema(
            [("id", pa.string()), ("vector", pa.list_(pa.float32(), dimension)), ("text", pa.string())]
        )
        db = _lancedb().connect(cls.database_uri(folder, manifest))
        tbl = db.create_table(table, schema=schema, mode="overwrite")
        manifest.write(folder)
        return cls(folder, manifest, tbl, encoder)

    @classmethod
    def open(cls, folder: str | Path, *, encoder: Encoder | None = None) -> LanceStore:
        folder = Path(folder)
        manifest = cls.read_manifest(folder, encoder)
        db = _lancedb().connect(cls.database_uri(folder, manifest))
        try:
            tbl = db.open_table(manifest.table)
        except (ValueError, FileNotFoundError) as exc:
            raise StoreFormatError(f"{folder}: no LanceDB table {manifest.table!r} ({exc})") from None
        return cls(folder, manifest, tbl, encoder)

    # --- the contract --------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self._table.count_rows())

    def add(self, ids: Ids, data: Any, *, texts: Sequence[str] | None = None) -> None:
        """Insert rows; an id already present is replaced (a merge on ``id``). On a store with a
        lexical part the rows' texts are needed: ``texts``, or ``data`` as texts."""
        ids_ = id_list(ids)
        texts = self._kept_texts(data, texts)
        vectors = self._vectors(data, "added data")
        check_rows(ids_, len(vectors), texts)
        if not ids_:
            return
        batch = self._arrow(ids_, vectors, texts)
        if self.count == 0:
            self._table.add(batch)
        else:
            merge = self._table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
            merge.execute(batch)
        if texts is not None:
            self._note_texts()

    upsert = add

    def ingest(self, batches: Iterable[Batch]) -> int:
        """Append a stream of (ids, vectors, texts or None) batches into an empty table, one batch
        in memory at a time; a failure part-way leaves the table as it was. An append does not
        look ids up: they must be unique across the stream (as a corpus's are; ``add`` merges)."""
        import pyarrow as pa

        if self.count:
            raise ValueError(f"{self.folder}: ingest is for an empty table; use add/upsert to change rows")
        seen = 0
        with_texts: list[bool] = []
        failure: list[BaseException] = []  # the stream's own error (LanceDB would wrap it)

        def stream() -> Iterator[Any]:
            nonlocal seen
            try:
                for ids, vectors, texts in batches:
                    x = self._vectors(vectors, "vectors", encode=False)
                    check_rows(ids, len(x), texts)
                    seen += len(ids)
                    with_texts.append(texts is not None)
                    yield from self._arrow(ids, x, texts).to_batches()
            except Exception as exc:
                failure.append(exc)

        schema = self._table.schema
        before = self._table.version
        try:
            self._table.add(pa.RecordBatchReader.from_batches(schema, stream()))
            if failure:
                raise failure[0]
        except BaseException:
            self._table.restore(before)  # the table as it was: nothing of this ingest stays
            raise
        if any(with_texts):
            self._note_texts()
        return seen

    def remove(self, ids: Ids) -> None:
        """Remove ids; all must be present (KeyError names those that are not)."""
        ids_ = list(dict.fromkeys(id_list(ids)))
        present: set[str] = set()
        for s in range(0, len(ids_), _SQL_CHUNK):
            part = ids_[s : s + _SQL_CHUNK]
            rows = self._table.search().where(_sql_in(part)).select(["id"]).limit(len(part)).to_arrow()
            present.update(rows.column("id").to_pylist())
        missing = [i for i in ids_ if i not in present]
        if missing:
            raise KeyError(f"{len(missing)} ids not in the store, e.g. {missing[:5]}")
        for s in range(0, len(ids_), _SQL_CHUNK):
            self._table.delete(_sql_in(ids_[s : s + _SQL_CHUNK]))

    def texts_of(self, ids: Sequence[str]) -> list[str | None]:
        if not self.has_texts or not ids:
            return [None] * len(ids)
        found: dict[str, str | None] = {}
        unique = list(dict.fromkeys(ids))
        for s in range(0, len(unique), _SQL_CHUNK):
            part = unique[s : s + _SQL_CHUNK]
            rows = self._table.search().where(_sql_in(part)).select(["id", "text"]).limit(len(part))
            found.update(zip(*rows.to_arrow().to_pydict().values(), strict=True))
        return [found.get(i) for i in ids]

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        mode: str | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
        normalization: str | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        query_texts: Sequence[str] | None = None,
        adaptive: bool | None = None,
        rescore: bool = True,
        expansion_search: int | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        exact: bool = False,
    ) -> SearchResult:
        """The ``k`` best rows per query; the vector search is exact when the table has no vector
        index or with ``exact``. ``mode`` and the fusion keywords as ``Index.search``'s (lexical
        and hybrid need the full-text index, :meth:`build_lexical`); normalization None is min-max
        here (see :mod:`biencoder.stores.hybrid`)."""
        settings = database_settings(
            backend=self.backend,
            has_lexical=self.has_lexical,
            k=check_k(k),
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            normalization=normalization,
            candidates=candidates,
            adaptive=adaptive,
            record=self.fusion_record,
        )

        def dense(q: Any, n: int) -> Candidates:
            return self._dense_lists(q, n, rescore, expansion_search, nprobes, refine_factor, exact)

        return run_search(settings, queries, query_texts, dense=dense, lexical=self._lexical_lists)

    def _dense_lists(
        self,
        queries: Any,
        k: int,
        rescore: bool,
        expansion_search: int | None,
        nprobes: int | None,
        refine_factor: int | None,
        exact: bool,
    ) -> Candidates:
        """Each query's ``k`` best rows by vector: (ids, scores), best first."""
        q = self._vectors([queries] if isinstance(queries, str) else queries, "queries")
        params = {**self.manifest.search_params}
        indexed = self.kind != "exact" and not exact
        out: Candidates = []
        for vector in q:
            query = self._table.search(vector, vector_column_name="vector").distance_type(self.metric)
            query = query.limit(k).select(["id", "_distance"])
            if not indexed:
                query = query.bypass_vector_index()
            else:
                query = query.nprobes(nprobes or params.get("nprobes", 20))
                factor = refine_factor or params.get("refine_factor")
                if rescore and factor:
                    query = query.refine_factor(factor)
                if self.kind == "ivf_hnsw_sq":
                    query = query.ef(expansion_search or params.get("ef", 100))
            table = query.to_arrow()
            distance = table.column("_distance").to_numpy().astype(np.float32)
            # cosine distance is 1 - cos; dot "distance" is 1 - dot: the Index's scores are 1 - d
            out.append(([str(i) for i in table.column("id").to_pylist()], 1.0 - distance))
        return out

    def _lexical_lists(self, texts: list[str], n: int) -> Candidates:
        """Each query's ``n`` best rows by the full-text index (BM25 over the ``text`` column, any
        query word matching), best first; ties by id, so the order is the same on every call."""
        from lancedb.query import MatchQuery

        out: Candidates = []
        for text in texts:
            match = MatchQuery(text, "text")  # type: ignore[call-arg]  # pydantic defaults mypy misses
            query = self._table.search(match, query_type="fts")
            table = query.limit(n).select(["id", "_score"]).to_arrow()
            ids = [str(i) for i in table.column("id").to_pylist()]
            scores = table.column("_score").to_numpy().astype(np.float32)
            order = sorted(range(len(ids)), key=lambda r: (-scores[r], ids[r]))
            out.append(([ids[r] for r in order], scores[order]))
        return out

    # --- the full-text index ---------------------------------------------------------------
    def build_lexical(self) -> float:
        """Build (or rebuild) the full-text index over the rows' texts; returns the seconds it took."""
        from lancedb.index import FTS

        if not self.has_texts:
            raise ValueError(
                f"{self.folder}: the full-text index is built over the rows' texts and this store "
                "keeps none; build it with texts (biencoder index --corpus ... --lexical)"
            )
        start = time.perf_counter()
        self._table.create_index("text", config=FTS(**FTS_SETTINGS), replace=True)
        seconds = time.perf_counter() - start
        self._rewrite(has_lexical=True, lexical_params={"index": "lance-fts", **FTS_SETTINGS})
        logger.info("LanceDB full-text index over %d rows in %.1f s", self.count, seconds)
        return seconds

    def optimize(self) -> None:
        """Fold rows written since the indexes were built into them (LanceDB's ``optimize``:
        compaction and index update); searches see those rows before, by a slower flat scan."""
        self._table.optimize()

    # --- the vector index ----------------------------------------------------------------
    def build_index(
        self,
        kind: str,
        *,
        num_partitions: int | None = None,
        num_sub_vectors: int | None = None,
        m: int = 20,
        ef_construction: int = 300,
        nprobes: int = 20,
        refine_factor: int | None = 10,
        ef: int = 100,
    ) -> float:
        """Build (or drop, with ``exact``) the vector index; returns the seconds it took."""
        from lancedb.index import HnswSq, IvfPq

        if kind not in LANCE_KINDS:
            raise ValueError(f"unknown LanceDB index kind {kind!r}; valid: {', '.join(LANCE_KINDS)}")
        metric: Any = self.metric  # "cosine" or "dot", as LanceDB spells them
        start = time.perf_counter()
        search: dict[str, Any] = {}
        built: dict[str, Any] = {k: v for k, v in self.manifest.index_params.items() if k == "uri"}
        if kind != "exact":
            rows = self.count
            if rows < 256:
                raise ValueError(f"a LanceDB {kind} index needs >= 256 rows to train, the table has {rows}")
            parts = num_partitions or max(1, min(int(np.sqrt(rows)), rows // 256))
            if kind == "ivf_pq":
                subs = num_sub_vectors or next(
                    s for s in (48, 32, 24, 16, 8, 4, 1) if self.dimension % s == 0
                )
                config: Any = IvfPq(distance_type=metric, num_partitions=parts, num_sub_vectors=subs)
                built.update(num_partitions=parts, num_sub_vectors=subs)
                search.update(nprobes=nprobes, refine_factor=refine_factor)
            else:
                config = HnswSq(
                    distance_type=metric, num_partitions=parts, m=m, ef_construction=ef_construction
                )
                built.update(num_partitions=parts, m=m, ef_construction=ef_construction)
                search.update(nprobes=nprobes, ef=ef, refine_factor=refine_factor)
            self._table.create_index("vector", config=config, replace=True)
        else:
            for index in self._table.list_indices():
                if list(index.columns) == ["vector"]:  # the full-text index stays
                    self._table.drop_index(index.name)
        seconds = time.perf_counter() - start
        self._rewrite(kind=kind, index_params=built, search_params=search)
        logger.info("LanceDB %s index over %d rows in %.1f s", kind, self.count, seconds)
        return seconds

    # --- helpers -------------------------------------------------------------------------
    def _arrow(self, ids: list[str], vectors: NDArray[np.float32], texts: Sequence[str] | None) -> Any:
        import pyarrow as pa

        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        return pa.table(
            {
                "id": pa.array(ids, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, self.dimension),
                "text": pa.array(list(texts) if texts is not None else [None] * len(ids), pa.string()),
            },
            schema=self._table.schema,
        )
