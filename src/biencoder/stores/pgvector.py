"""PostgreSQL with pgvector behind the store contract.

A table ``(id text PRIMARY KEY, embedding vector(dim), text text)``, filled by binary COPY
(straight into an empty table; through a temporary table and ``INSERT ... ON CONFLICT`` to
upsert), searched by ``<=>`` (cosine distance) or ``<#>`` (negative inner product). Without an
index a search is an exact scan; ``build_index("hnsw")`` makes an HNSW index with the metric's
operator class, searched with ``hnsw.ef_search``. The folder's ``store.json`` names the table,
never the connection: the DSN comes from ``dsn=`` or the ``BIENCODER_PG_DSN`` variable.
``build_lexical`` adds PostgreSQL's full-text search, for lexical and hybrid search
(:mod:`biencoder.stores.hybrid`): a ``tsv`` column generated from ``text`` with the ``english``
configuration (so every write keeps it in step), a GIN index on it, queries read with
``plainto_tsquery`` and their words ORed, ranked by ``ts_rank_cd`` (length-normalised).
Scaling out is PostgreSQL's own answer (read replicas for query load, Citus to shard a table);
see docs/scale-out.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from biencoder.index.config import SearchResult
from biencoder.index.fusion import DEFAULT_CANDIDATES
from biencoder.protocol import Encoder
from biencoder.stores.contract import (
    Batch,
    Ids,
    ManifestStore,
    StoreFormatError,
    StoreManifest,
    check_identifier,
    check_k,
    check_rows,
    id_list,
)
from biencoder.stores.hybrid import Candidates, database_settings, run_search

logger = logging.getLogger(__name__)

DSN_VARIABLE = "BIENCODER_PG_DSN"
PG_KINDS = ("exact", "hnsw")
MAX_LEXICAL_WORKERS = 4  # connections for one batch of full-text queries
LEXICAL_BATCH_PER_WORKER = 32  # queries an extra connection must have to be worth opening
_OPS = {"cosine": ("<=>", "vector_cosine_ops"), "dot": ("<#>", "vector_ip_ops")}
TS_CONFIG = "english"  # the text search configuration: English stemming and stop words
# ts_rank_cd's normalization 1 divides by 1 + log(the row's length), as BM25 weighs length; on
# SciFact claims it agrees with BM25 a little more than 0 (no length) does: tests/stores
TS_RANK_NORMALIZATION = 1
# plainto_tsquery ANDs the query's words; a lexical candidate is a row holding any of them (as
# BM25's are), so the ANDs become ORs. Its lexemes are quoted, so ' & ' is only ever an operator.
_TSQUERY = "replace(plainto_tsquery({config}, %s)::text, ' & ', ' | ')::tsquery"


def _psycopg() -> Any:
    try:
        import pgvector.psycopg  # noqa: F401
        import psycopg
    except ImportError as exc:
        raise ImportError(
            "the pgvector backend needs psycopg and pgvector: pip install 'biencoder[stores]'"
        ) from exc
    return psycopg


def resolve_dsn(dsn: str | None, where: object) -> str:
    dsn = dsn or os.environ.get(DSN_VARIABLE)
    if not dsn:
        raise ValueError(f"{where}: a pgvector store needs a connection: pass --dsn or set {DSN_VARIABLE}")
    return dsn


def connect(dsn: str) -> Any:
    """A connection with pgvector's types registered (the extension created if missing)."""
    psycopg = _psycopg()
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ConnectionError(f"cannot connect to PostgreSQL at {dsn!r}: {exc}") from None
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    register_vector(conn)
    return conn


class PgVectorStore(ManifestStore):
    """A pgvector table behind the store contract; one connection, used by one thread at a time."""

    backend = "pgvector"

    def __init__(
        self,
        folder: Path,
        manifest: StoreManifest,
        conn: Any,
        encoder: Encoder | None,
        dsn: str | None = None,
    ) -> None:
        super().__init__(folder, manifest, encoder)
        self._conn = conn
        self._dsn = dsn  # for the extra connections of a large batch of full-text queries
        self._lock = threading.Lock()
        self._sql = _psycopg().sql

    @classmethod
    def create(
        cls,
        folder: str | Path,
        *,
        dimension: int,
        dsn: str | None = None,
        metric: str = "cosine",
        model_name: str | None = None,
        table: str = "vectors",
        encoder: Encoder | None = None,
    ) -> PgVectorStore:
        """A new, empty table (an existing one of that name is dropped) and its folder."""
        folder = Path(folder)
        manifest = StoreManifest(
            backend="pgvector", dimension=dimension, metric=metric, model_name=model_name, table=table
        )
        dsn = resolve_dsn(dsn, folder)
        conn = connect(dsn)
        store = cls(folder, manifest, conn, encoder, dsn)
        t = store._table
        conn.execute(store._sql.SQL("DROP TABLE IF EXISTS {}").format(t))
        conn.execute(
            store._sql.SQL(
                "CREATE TABLE {} (id text PRIMARY KEY, embedding vector({}) NOT NULL, text text)"
            ).format(t, store._sql.Literal(dimension))
        )
        folder.mkdir(parents=True, exist_ok=True)
        manifest.write(folder)
        return store

    @classmethod
    def open(
        cls, folder: str | Path, *, dsn: str | None = None, encoder: Encoder | None = None
    ) -> PgVectorStore:
        folder = Path(folder)
        manifest = cls.read_manifest(folder, encoder)
        dsn = resolve_dsn(dsn, folder)
        store = cls(folder, manifest, connect(dsn), encoder, dsn)
        exists = store._conn.execute("SELECT to_regclass(%s)", (manifest.table,)).fetchone()[0]
        if exists is None:
            raise StoreFormatError(f"{folder}: the database has no table {manifest.table!r}")
        return store

    def close(self) -> None:
        self._conn.close()

    def drop(self) -> None:
        """Drop the table (a scratch table of a build that failed)."""
        with self._lock:
            self._conn.execute(self._sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))

    # --- the contract --------------------------------------------------------------------
    @property
    def _table(self) -> Any:
        return self._sql.Identifier(self.manifest.table)

    @property
    def count(self) -> int:
        with self._lock:
            q = self._sql.SQL("SELECT count(*) FROM {}").format(self._table)
            return int(self._conn.execute(q).fetchone()[0])

    def add(self, ids: Ids, data: Any, *, texts: Sequence[str] | None = None) -> None:
        """Insert rows; an id already present is replaced (``ON CONFLICT (id) DO UPDATE``). On a
        store with a lexical part the rows' texts are needed: ``texts``, or ``data`` as texts."""
        ids_ = id_list(ids)
        texts = self._kept_texts(data, texts)
        vectors = self._vectors(data, "added data")
        check_rows(ids_, len(vectors), texts)
        if not ids_:
            return
        sql, t = self._sql, self._table
        with self._lock, self._conn.transaction():
            self._conn.execute(
                sql.SQL("CREATE TEMP TABLE biencoder_staging (LIKE {}) ON COMMIT DROP").format(t)
            )
            self._copy(sql.Identifier("biencoder_staging"), [(ids_, vectors, texts)])
            self._conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, embedding, text) SELECT id, embedding, text "
                    "FROM biencoder_staging ON CONFLICT (id) DO UPDATE "
                    "SET embedding = EXCLUDED.embedding, text = EXCLUDED.text"
                ).format(t)
            )
        if texts is not None:
            self._note_texts()

    upsert = add

    def ingest(self, batches: Iterable[Batch]) -> int:
        """Binary COPY a stream of (ids, vectors, texts or None) batches into the table, in one
        transaction (an id already there, or twice in the stream, aborts it: nothing is written)."""
        with_texts = False

        def checked() -> Iterable[Batch]:
            nonlocal with_texts
            for ids, vectors, texts in batches:
                x = self._vectors(vectors, "vectors", encode=False)
                check_rows(ids, len(x), texts)
                with_texts = with_texts or texts is not None
                yield ids, x, texts

        psycopg = _psycopg()
        with self._lock:
            try:
                with self._conn.transaction():
                    rows = self._copy(self._table, checked())
            except psycopg.errors.UniqueViolation as exc:
                raise ValueError(f"{self.folder}: an id is already in the table ({exc})") from None
        if with_texts:
            self._note_texts()
        return rows

    def remove(self, ids: Ids) -> None:
        """Remove ids; all must be present (KeyError names those that are not)."""
        ids_ = list(dict.fromkeys(id_list(ids)))
        sql, t = self._sql, self._table
        with self._lock, self._conn.transaction():
            found = self._conn.execute(
                sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(t), (ids_,)
            ).fetchall()
            present = {r[0] for r in found}
            missing = [i for i in ids_ if i not in present]
            if missing:
                raise KeyError(f"{len(missing)} ids not in the store, e.g. {missing[:5]}")
            self._conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(t), (ids_,))

    def texts_of(self, ids: Sequence[str]) -> list[str | None]:
        if not self.has_texts or not ids:
            return [None] * len(ids)
        with self._lock:
            rows = self._conn.execute(
                self._sql.SQL("SELECT id, text FROM {} WHERE id = ANY(%s)").format(self._table),
                (list(ids),),
            ).fetchall()
        found = dict(rows)
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
        exact: bool = False,
    ) -> SearchResult:
        """The ``k`` best rows per query; the vector search is exact without an index or with
        ``exact`` (a scan). ``mode`` and the fusion keywords as ``Index.search``'s (lexical and
        hybrid need the full-text index, :meth:`build_lexical`); normalization None is min-max
        here (see :mod:`biencoder.stores.hybrid`)."""
        del rescore  # pgvector's HNSW ranks by the full vectors already
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
            return self._dense_lists(q, n, expansion_search, exact)

        return run_search(settings, queries, query_texts, dense=dense, lexical=self._lexical_lists)

    def _dense_lists(self, queries: Any, k: int, expansion_search: int | None, exact: bool) -> Candidates:
        """Each query's ``k`` best rows by vector: (ids, scores), best first."""
        q = self._vectors([queries] if isinstance(queries, str) else queries, "queries")
        op = self._sql.SQL(_OPS[self.metric][0])
        query = self._sql.SQL("SELECT id, embedding {} %s AS d FROM {} ORDER BY d LIMIT %s").format(
            op, self._table
        )
        ef = expansion_search or self.manifest.search_params.get("ef_search", 100)
        out: Candidates = []
        with self._lock, self._conn.transaction():
            if exact or self.kind == "exact":
                self._conn.execute("SET LOCAL enable_indexscan = off")
            else:
                self._conn.execute(self._sql.SQL("SET LOCAL hnsw.ef_search = {}").format(int(ef)))
            for vector in q:
                rows = self._conn.execute(query, (vector, k)).fetchall()
                d = np.array([r[1] for r in rows], dtype=np.float64)
                # cosine: score 1 - distance; inner product: <#> is -dot
                scores = (1.0 - d if self.metric == "cosine" else -d).astype(np.float32)
                out.append(([r[0] for r in rows], scores))
        return out

    def _lexical_lists(self, texts: list[str], n: int) -> Candidates:
        """Each query's ``n`` best rows holding any of its words, by ``ts_rank_cd`` (ties: by id)."""
        sql, params = self._sql, self.manifest.lexical_params
        config = sql.Literal(params.get("config", TS_CONFIG))
        query = sql.SQL(
            "SELECT id, ts_rank_cd(tsv, q, {rank}) AS r FROM {}, (SELECT " + _TSQUERY + " AS q) AS query "
            "WHERE tsv @@ q ORDER BY r DESC, id LIMIT %s"
        ).format(self._table, config=config, rank=sql.Literal(params.get("normalization", 0)))

        def ranked(conn: Any, chunk: Sequence[str]) -> Candidates:
            out: Candidates = []
            for text in chunk:
                rows = conn.execute(query, (text, n)).fetchall()
                out.append(([r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.float32)))
            return out

        # ts_rank_cd scores every row holding a query word: ~0.1 s a query on 5,000 abstracts. A large
        # batch (the fusion decision's 256 probes) is spread over one server process per core.
        workers = min(os.cpu_count() or 1, MAX_LEXICAL_WORKERS, len(texts) // LEXICAL_BATCH_PER_WORKER)
        if workers < 2 or self._dsn is None:
            with self._lock:
                return ranked(self._conn, texts)
        chunks = [texts[i::workers] for i in range(workers)]

        def run(chunk: Sequence[str]) -> Candidates:
            conn = connect(str(self._dsn))
            try:
                return ranked(conn, chunk)
            finally:
                conn.close()

        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(run, chunks))
        out: Candidates = [([], np.zeros(0, np.float32))] * len(texts)
        for w, part in enumerate(parts):
            out[w::workers] = part
        return out

    def build_lexical(self) -> float:
        """Add the generated ``tsv`` column and its GIN index (or rebuild them); returns the seconds."""
        if not self.has_texts:
            raise ValueError(
                f"{self.folder}: the full-text index is built over the rows' texts and this store "
                "keeps none; build it with texts (biencoder index --corpus ... --lexical)"
            )
        sql, t = self._sql, self._table
        start = time.perf_counter()
        with self._lock, self._conn.transaction():
            self._conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS tsv").format(t))
            self._conn.execute(
                sql.SQL(
                    "ALTER TABLE {} ADD COLUMN tsv tsvector "
                    "GENERATED ALWAYS AS (to_tsvector({}, coalesce(text, ''))) STORED"
                ).format(t, sql.Literal(TS_CONFIG))
            )
            self._conn.execute(
                sql.SQL("CREATE INDEX {} ON {} USING gin (tsv)").format(
                    self._fts_index(self.manifest.table), t
                )
            )
        seconds = time.perf_counter() - start
        self._rewrite(
            has_lexical=True,
            lexical_params={
                "config": TS_CONFIG,
                "rank": "ts_rank_cd",
                "normalization": TS_RANK_NORMALIZATION,
            },
        )
        logger.info("PostgreSQL full-text index (%s) over the table in %.1f s", TS_CONFIG, seconds)
        return seconds

    def _fts_index(self, table: str) -> Any:
        return self._sql.Identifier(f"{table[:59]}_fts")

    def build_index(
        self, kind: str, *, m: int = 16, ef_construction: int = 64, ef_search: int = 100
    ) -> float:
        """Build (or drop, with ``exact``) the HNSW index; returns the seconds it took."""
        if kind not in PG_KINDS:
            raise ValueError(f"unknown pgvector index kind {kind!r}; valid: {', '.join(PG_KINDS)}")
        sql = self._sql
        name = sql.Identifier(f"{self.manifest.table}_hnsw")
        start = time.perf_counter()
        with self._lock:
            self._conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(name))
            if kind == "hnsw":
                self._conn.execute(
                    sql.SQL(
                        "CREATE INDEX {} ON {} USING hnsw (embedding {}) WITH (m = {}, ef_construction = {})"
                    ).format(
                        name,
                        self._table,
                        sql.SQL(_OPS[self.metric][1]),
                        sql.Literal(int(m)),
                        sql.Literal(int(ef_construction)),
                    )
                )
        seconds = time.perf_counter() - start
        if kind == "hnsw":
            self._rewrite(
                kind=kind,
                index_params={"m": m, "ef_construction": ef_construction},
                search_params={"ef_search": ef_search},
            )
        else:
            self._rewrite(kind=kind, index_params={}, search_params={})
        logger.info("pgvector %s index over the table in %.1f s", kind, seconds)
        return seconds

    def rename(self, table: str) -> None:
        """Take the name ``table`` in one transaction, replacing a table of that name: a build
        into a scratch table becomes visible whole or not at all."""
        sql = self._sql
        target = check_identifier(table)
        old_index = sql.Identifier(f"{self.manifest.table}_hnsw")
        with self._lock, self._conn.transaction():
            self._conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(target)))
            self._conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(self._table, sql.Identifier(target))
            )
            self._conn.execute(
                sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                    old_index, sql.Identifier(f"{target}_hnsw")
                )
            )
            self._conn.execute(
                sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                    self._fts_index(self.manifest.table), self._fts_index(target)
                )
            )
        self._rewrite(table=target)

    # --- helpers -------------------------------------------------------------------------
    def _copy(self, table: Any, batches: Iterable[Batch]) -> int:
        """Binary COPY rows into ``table``; the caller holds the lock and a transaction."""
        rows = 0
        statement = self._sql.SQL("COPY {} (id, embedding, text) FROM STDIN WITH (FORMAT BINARY)").format(
            table
        )
        with self._conn.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(["text", "vector", "text"])
            for ids, vectors, texts in batches:
                for n, (i, v) in enumerate(zip(ids, vectors, strict=True)):
                    copy.write_row((i, v, texts[n] if texts is not None else None))
                rows += len(ids)
        return rows
