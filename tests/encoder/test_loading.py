"""load_encoder: one entry point for both runtimes, with the same answers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from biencoder import SentenceEncoder, load_encoder
from biencoder.cli import main
from tests.numerics import CROSS_RUNTIME_ATOL

TEXTS = ["the cat", "a dog in the water", "what is search?", "", "red fish and blue fish"]


def test_torch_backend_is_the_sentence_encoder(tiny_model_dir: Path) -> None:
    model = load_encoder(tiny_model_dir)
    assert isinstance(model, SentenceEncoder)


def test_unknown_backend_and_precision(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tf'; valid: torch, onnx"):
        load_encoder(tiny_model_dir, backend="tf")
    with pytest.raises(ValueError, match="fp32 only"):
        load_encoder(tiny_model_dir, precision="int8")


def test_onnx_backend_answers_like_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from biencoder.runtime.export import ExportConfig, export

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    export(folder, TEXTS * 2, ExportConfig())
    onnx = load_encoder(folder, backend="onnx")
    assert not isinstance(onnx, SentenceEncoder)
    torch_model = load_encoder(folder)
    np.testing.assert_allclose(onnx.encode(TEXTS), torch_model.encode(TEXTS), atol=CROSS_RUNTIME_ATOL)

    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.npy"
    argv = ["-q", "encode", "--model", str(folder), "-i", str(src), "-o", str(out), "--backend", "onnx"]
    assert main(argv) == 0
    np.testing.assert_allclose(np.load(out), torch_model.encode(TEXTS), atol=CROSS_RUNTIME_ATOL)


def test_onnx_backend_exports_a_missing_graph_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    onnx = load_encoder(folder, backend="onnx")  # no graph yet: exported into the folder
    graph = folder / "onnx" / "model.onnx"
    assert graph.is_file()
    np.testing.assert_allclose(
        onnx.encode(TEXTS), load_encoder(folder).encode(TEXTS), atol=CROSS_RUNTIME_ATOL
    )
    made = graph.stat().st_mtime_ns
    load_encoder(folder, backend="onnx")
    assert graph.stat().st_mtime_ns == made  # the second load reuses it
