"""Each backend on real embeddings (2,400 MS MARCO passages of TREC DL19-mini, its 43 queries):
exact modes give the exact top-10; the ANN indexes reach recall@10 >= 0.98 of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.index import Index, IndexConfig
from biencoder.stores.build import StoreSpec, build_store
from biencoder.stores.folder import open_store
from tests.numerics import dot_atol

pytestmark = pytest.mark.slow


# Two kernels' float32 cosines of 384-dim unit vectors differ by at most a dot product's error.
SCORE_ATOL = dot_atol(384)


def _same_top10(got: Any, want: Any, embeddings: Any) -> None:
    """Equal ids, except where a rank holds another row whose exact score ties within SCORE_ATOL."""
    ids, vectors, queries = embeddings
    row = {i: n for n, i in enumerate(ids)}
    for q, g_ids, w_ids, w_scores in zip(queries, got.ids, want.ids, want.scores, strict=True):
        if g_ids != w_ids:
            exact_of_got = vectors[[row[i] for i in g_ids]] @ q
            np.testing.assert_allclose(exact_of_got, w_scores, atol=SCORE_ATOL, err_msg=f"{g_ids} != {w_ids}")
    np.testing.assert_allclose(got.scores, want.scores, atol=SCORE_ATOL)


def _recall(got: Any, want: Any) -> float:
    hits = sum(len(set(g) & set(w)) for g, w in zip(got.ids, want.ids, strict=True))
    return hits / sum(len(w) for w in want.ids)


@pytest.fixture(scope="module")
def exact(dl19_embeddings: Any) -> Any:
    ids, vectors, queries = dl19_embeddings
    index = Index(vectors.shape[1], config=IndexConfig())
    index.add(ids, vectors)
    return index.search(queries, 10)


CASES = [
    ("memory", "exact", 1.0),
    ("memory", "hnsw", 0.98),
    ("lancedb", "exact", 1.0),
    ("lancedb", "ivf_pq", 0.98),
    ("lancedb", "ivf_hnsw_sq", 0.98),
    ("pgvector", "exact", 1.0),
    ("pgvector", "hnsw", 0.98),
]


@pytest.mark.parametrize(("backend", "kind", "recall"), CASES, ids=[f"{b}-{k}" for b, k, _ in CASES])
def test_each_backend_against_exact_search(
    backend: str,
    kind: str,
    recall: float,
    dl19_embeddings: Any,
    exact: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "lancedb":
        pytest.importorskip("lancedb")
    dsn = request.getfixturevalue("pg_dsn") if backend == "pgvector" else None
    ids, vectors, queries = dl19_embeddings
    spec = StoreSpec(backend=backend, kind=kind, dsn=dsn, table=f"dl19_{kind}")
    batches = ((ids[s : s + 500], vectors[s : s + 500], None) for s in range(0, len(ids), 500))
    build_store(spec, tmp_path / "s", batches, dimension=vectors.shape[1], model_name="minilm")
    store = open_store(tmp_path / "s", dsn=dsn)
    assert store.count == len(ids) and store.kind == kind
    got = store.search(queries, 10)
    if recall == 1.0:
        _same_top10(got, exact, dl19_embeddings)
    else:
        assert _recall(got, exact) >= recall
