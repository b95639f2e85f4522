"""PostgreSQL with pgvector behind the store contract.

A table ``(id text PRIMARY KEY, embedding vector(dim), text text)``, filled by binary COPY
(straight into an empty table; through a temporary table and ``INSERT ... ON CONFLICT`` to
upsert), searched by ``<=>`` (cosine distance) or ``<#>`` (negative inner product). Without an
index a search is an exact scan; ``build_index("hnsw")`` makes an HNSW index with the metric's
operator class, searched with ``hnsw.ef_search``. The folder's ``store.json`` names the table,
never the connection: the DSN comes from ``dsn=`` or the ``BIENCODER_PG_DSN`` variable.
Scaling out is PostgreSQL's own answer (read replicas for query load, Citus to shard a table);
see docs/scale-out.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biencoder.index.config import SearchResult
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

logger = logging.getLogger(__name__)

DSN_VARIABLE = "BIENCODER_PG_DSN"
PG_KINDS = ("exact", "hnsw")
_OPS = {"cosine": ("<=>", "vector_cosine_ops"), "dot": ("<#>", "vector_ip_ops")}


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

    def __init__(self, folder: Path, manifest: StoreManifest, conn: Any, encoder: Encoder | None) -> None:
        super().__init__(folder, manifest, encoder)
        self._conn = conn
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
        conn = connect(resolve_dsn(dsn, folder))
        store = cls(folder, manifest, conn, encoder)
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
        store = cls(folder, manifest, connect(resolve_dsn(dsn, folder)), encoder)
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
        """Insert rows; an id already present is replaced (``ON CONFLICT (id) DO UPDATE``)."""
        ids_ = id_list(ids)
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
                    "INSERT INTO {} SELECT * FROM biencoder_staging ON CONFLICT (id) DO UPDATE "
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
        rescore: bool = True,
        expansion_search: int | None = None,
        exact: bool = False,
    ) -> SearchResult:
        """The ``k`` best rows per query; exact without an index or with ``exact`` (a scan)."""
        del rescore  # pgvector's HNSW ranks by the full vectors already
        k = check_k(k)
        q = self._vectors([queries] if isinstance(queries, str) else queries, "queries")
        op = self._sql.SQL(_OPS[self.metric][0])
        query = self._sql.SQL("SELECT id, embedding {} %s AS d FROM {} ORDER BY d LIMIT %s").format(
            op, self._table
        )
        ef = expansion_search or self.manifest.search_params.get("ef_search", 100)
        ids: list[list[str]] = []
        scores: list[list[float]] = []
        with self._lock, self._conn.transaction():
            if exact or self.kind == "exact":
                self._conn.execute("SET LOCAL enable_indexscan = off")
            else:
                self._conn.execute(self._sql.SQL("SET LOCAL hnsw.ef_search = {}").format(int(ef)))
            for vector in q:
                rows = self._conn.execute(query, (vector, k)).fetchall()
                ids.append([r[0] for r in rows])
                d = np.array([r[1] for r in rows], dtype=np.float64)
                # cosine: score 1 - distance; inner product: <#> is -dot
                scores.append([float(s) for s in (1.0 - d if self.metric == "cosine" else -d)])
        return SearchResult(ids=ids, scores=scores)

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
