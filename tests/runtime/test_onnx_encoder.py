"""The ONNX runtime against the PyTorch encoder (the reference) on the tiny model and on MiniLM."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from biencoder.batching import length_sorted_batches
from biencoder.runtime.export import ExportConfig, FidelityError, export
from biencoder.runtime.onnx_encoder import OnnxEncoder, RuntimeSettings
from biencoder.runtime.quantize import Int8Recipe
from biencoder.runtime.tokenizer import TextTokenizer
from tests.numerics import CROSS_RUNTIME_ATOL
from tests.tiny import WORDS, build_tiny_encoder

TEXTS = [
    "the cat and the dog",
    "what is a vector search model",
    "Fish, birds and trees: big green house!",
    " ".join(WORDS),  # longer than max_seq_length: truncated
    "a",
    "Ünïcödé çafé naïve 東京 emoji 🙂 tabs\tand\nnewlines",
    "",
]


@pytest.fixture(scope="module")
def tiny_exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_encoder(tmp_path_factory.mktemp("rt") / "tiny")
    config = ExportConfig(quantize="int8", min_mean_cosine_int8=-1.0, min_cosine_int8=-1.0)
    export(folder, TEXTS * 2, config)
    return folder


def test_tokenizer_ids_equal_transformer(tiny_exported: Path) -> None:
    from biencoder import SentenceEncoder

    ours = TextTokenizer.load(tiny_exported)
    ref = SentenceEncoder.load(tiny_exported, device="cpu").transformer
    got, want = ours.tokenize(TEXTS), ref.tokenize_unpadded(TEXTS)
    assert got.ids == want.ids
    assert got.type_ids == want.type_ids
    assert got.truncated.tolist() == want.truncated.tolist()
    assert got.truncated.any()
    assert ours.max_seq_length == ref.max_seq_length


@pytest.mark.parametrize("normalize", [None, False, True])
def test_fp32_matches_torch(tiny_exported: Path, normalize: bool | None) -> None:
    from biencoder import SentenceEncoder

    ref = SentenceEncoder.load(tiny_exported, device="cpu").encode(TEXTS, batch_size=3, normalize=normalize)
    onnx = OnnxEncoder.load(tiny_exported, threads=1)
    got = onnx.encode(TEXTS, batch_size=3, normalize=normalize)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=CROSS_RUNTIME_ATOL)
    single = onnx.encode(TEXTS[0], normalize=normalize)
    assert single.shape == (onnx.dimension,)
    np.testing.assert_allclose(single, ref[0], atol=CROSS_RUNTIME_ATOL)


def test_contract(tiny_exported: Path) -> None:
    from biencoder.protocol import Encoder

    enc = OnnxEncoder.load(tiny_exported, precision="int8", threads=1)
    assert isinstance(enc, Encoder)
    assert enc.encode([]).shape == (0, enc.dimension)
    emb = enc.encode(TEXTS[:3])
    assert enc.similarity(emb, emb).shape == (3, 3)
    np.testing.assert_allclose(enc.similarity_pairwise(emb, emb), np.ones(3), atol=1e-5)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        enc.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(["ok"], batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        OnnxEncoder.load(tiny_exported, precision="int4")


def test_batch_size_does_not_change_output(tiny_exported: Path) -> None:
    enc = OnnxEncoder.load(tiny_exported, threads=1)
    wide = OnnxEncoder.load(tiny_exported, settings=RuntimeSettings(threads=1, run_rows=64, run_tokens=10**6))
    np.testing.assert_allclose(enc.encode(TEXTS, batch_size=1), wide.encode(TEXTS, batch_size=64), atol=1e-5)


def test_calls_respect_rows_and_tokens(tiny_exported: Path) -> None:
    enc = OnnxEncoder.load(tiny_exported, threads=1)
    tokens = enc.tokenizer.tokenize(TEXTS * 5)
    lengths = tokens.lengths
    batches = list(length_sorted_batches(tokens, 4, max_tokens=40))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(TEXTS) * 5))  # every row once
    for rows in batches:
        longest = int(lengths[rows].max())
        assert len(rows) <= 4 and (len(rows) == 1 or len(rows) * longest <= 40)
    assert [len(b) for b in length_sorted_batches(tokens, 4)] == [4] * 8 + [3]
    with pytest.raises(ValueError, match="run_rows"):
        RuntimeSettings(run_rows=0)


def test_layout_and_parity_file(tiny_exported: Path) -> None:
    onnx_dir = tiny_exported / "onnx"
    assert {"model.onnx", "model_qint8.onnx", "PARITY.md"} <= {p.name for p in onnx_dir.iterdir()}
    assert not [p for p in onnx_dir.iterdir() if p.name.startswith(".")]  # no temporary left behind
    parity = (onnx_dir / "PARITY.md").read_text()
    assert "| ONNX Runtime | int8 | onnx/model_qint8.onnx |" in parity


def test_missing_graph_names_the_command(tmp_path: Path) -> None:
    folder = build_tiny_encoder(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="biencoder export"):
        OnnxEncoder.load(folder, precision="int8")


def test_int8_refused_below_threshold(tmp_path: Path) -> None:
    folder = build_tiny_encoder(tmp_path / "strict")
    strict = ExportConfig(quantize="int8", min_mean_cosine_int8=1.0, min_cosine_int8=1.0)
    with pytest.raises(FidelityError, match="--force"):
        export(folder, TEXTS * 2, strict)
    assert not (folder / "onnx" / "model_qint8.onnx").exists()
    forced = ExportConfig(quantize="int8", min_mean_cosine_int8=1.0, min_cosine_int8=1.0, force=True)
    assert export(folder, TEXTS * 2, forced).files["int8"].is_file()


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="quantize"):
        ExportConfig(quantize="int4")
    with pytest.raises(ValueError, match="ffn_output"):
        Int8Recipe(ffn_output="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calibration"):
        export("unused", ["too few"])


def test_never_imports_torch(tiny_exported: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        import biencoder, biencoder.runtime
        from biencoder.runtime import OnnxEncoder
        enc = OnnxEncoder.load({str(tiny_exported)!r}, precision="int8")
        enc.similarity(enc.encode(["a cat"]), enc.encode("a dog"))
        heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_cli_export(tmp_path: Path) -> None:
    from biencoder.cli import main

    folder = build_tiny_encoder(tmp_path / "cli")
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(TEXTS[:5] * 3) + "\n")
    rc = main(
        ["export", "--model", str(folder), "--calibration", str(calib), "--output", str(tmp_path / "out")]
    )
    assert rc == 0
    assert (tmp_path / "out" / "onnx" / "model.onnx").is_file()
    assert (tmp_path / "out" / "modules.json").is_file()


@pytest.mark.slow
def test_minilm_fp32_and_int8_against_sentence_transformers(
    minilm_path: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from biencoder.data.beir import load_corpus, load_queries

    corpus = list(load_corpus(data_dir / "scifact" / "corpus.jsonl").values())[:24]
    queries = list(load_queries(data_dir / "scifact" / "queries.jsonl").values())[:24]
    texts = corpus + queries
    folder = tmp_path_factory.mktemp("minilm") / "model"
    result = export(minilm_path, texts, ExportConfig(quantize="int8"), output=folder)
    assert result.fused.get("Attention") == 6
    st = pytest.importorskip("sentence_transformers").SentenceTransformer(str(minilm_path), device="cpu")
    ref = st.encode(texts, batch_size=16, convert_to_numpy=True)
    ours = TextTokenizer.load(folder).tokenize(texts).ids
    assert ours == [
        st.tokenizer(t, truncation=True, max_length=st.max_seq_length)["input_ids"] for t in texts
    ]
    fp32 = OnnxEncoder.load(folder).encode(texts, batch_size=16)
    cos = (fp32 * ref).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999
    int8 = OnnxEncoder.load(folder, precision="int8").encode(texts, batch_size=16)
    cos8 = (int8 * ref).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos8.mean() >= 0.995, cos8.mean()
