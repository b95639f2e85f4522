"""Server fixtures: the tiny model and MiniLM exported to ONNX, live servers on loopback ports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.serve.helpers import ServerProcess
from tests.tiny import WORDS, build_tiny_encoder

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install 'biencoder[serve]'")

CALIBRATION = [
    "the cat and the dog",
    "what is a vector search model",
    "Fish, birds and trees: big green house!",
    " ".join(WORDS),
    "a small red house by the river",
    "Ünïcödé çafé naïve 東京 emoji 🙂",
    "how do embeddings work",
    "is it raining in the city today",
]


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its fp32 graph (no int8: the tiny model is not worth quantizing)."""
    from biencoder.runtime.export import ExportConfig, export

    folder = build_tiny_encoder(tmp_path_factory.mktemp("serve-tiny") / "tiny")
    export(folder, CALIBRATION, ExportConfig())
    return folder


@pytest.fixture(scope="session")
def minilm_onnx(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of MiniLM with its fp32 and int8 graphs, exported as `biencoder serve` would."""
    from biencoder.runtime.export import ExportConfig, export, readme_sentences

    folder = tmp_path_factory.mktemp("serve-minilm") / "all-MiniLM-L6-v2"
    export(minilm_path, readme_sentences(minilm_path, 512), ExportConfig(quantize="int8"), output=folder)
    return folder


@pytest.fixture(scope="session")
def minilm_server(minilm_onnx: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(minilm_onnx, "--served-model-name", "all-MiniLM-L6-v2").wait_ready()
    yield server
    assert server.stop() == 0, server.output()


@pytest.fixture(scope="session")
def texts(data_dir: Path) -> list[str]:
    """STSb sentences then SciFact abstracts (many longer than 256 tokens: truncated)."""
    from biencoder.evaluation.sts import load_sts

    pairs = load_sts(data_dir / "stsb" / "sts-test.csv")
    sentences = list(pairs.sentences1[:60]) + list(pairs.sentences2[:60])
    corpus = next((data_dir / "scifact").rglob("corpus.jsonl"))
    with corpus.open(encoding="utf-8") as f:
        passages = [json.loads(line)["text"] for _, line in zip(range(40), f, strict=False)]
    out = [t for t in sentences + passages if t.strip()]
    assert len(out) >= 100
    return out


@pytest.fixture(scope="session")
def reference(st_minilm, texts: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """sentence-transformers' embeddings of ``texts``: what every client's answer must equal."""
    return st_minilm.encode(texts, batch_size=32, convert_to_numpy=True)


@pytest.fixture(scope="session")
def tiny_server(tiny_onnx: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tiny_onnx, "--served-model-name", "tiny").wait_ready()
    yield server
    server.stop()


@pytest.fixture()
def tiny_client(tiny_onnx: Path):  # type: ignore[no-untyped-def]
    """The app in-process (lifespan run), for tests that need its state or a custom config."""
    from starlette.testclient import TestClient

    from biencoder.serve.app import create_app
    from biencoder.serve.config import ServeConfig
    from biencoder.serve.model import load_served_model

    app = create_app(
        load_served_model(str(tiny_onnx)), ServeConfig(model=str(tiny_onnx), served_model_names=("tiny",))
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
