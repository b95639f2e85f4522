"""SentenceEncoder on the tiny model: shapes, order, input checks, persistence, normalise and prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from biencoder import SentenceEncoder
from biencoder.modules.errors import ModelFolderError
from biencoder.resolve import ModelNotFoundError
from tests.numerics import EMBEDDING_ATOL

TEXTS = ["the cat", "a big dog and a small fish in the water", "", "what is a vector search model?", "red"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> SentenceEncoder:
    return SentenceEncoder.load(tiny_model_dir, device="cpu")


def test_shapes(tiny: SentenceEncoder) -> None:
    assert tiny.dimension == 32
    assert tiny.encode(TEXTS).shape == (5, 32)
    assert tiny.encode(TEXTS).dtype == np.float32
    assert tiny.encode("the cat").shape == (32,)
    assert tiny.encode([]).shape == (0, 32)


def test_batching_and_sorting_do_not_change_results(tiny: SentenceEncoder) -> None:
    together = tiny.encode(TEXTS, batch_size=2)
    alone = np.stack([tiny.encode(t) for t in TEXTS])
    # other batch shapes, other GEMM blockings: rounding only, held to the embedding contract
    np.testing.assert_allclose(together, alone, atol=EMBEDDING_ATOL)


def test_unit_norm_and_normalize_flags(tiny: SentenceEncoder) -> None:
    emb = tiny.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    raw = tiny.encode(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), emb, atol=1e-6)


def test_truncation_is_reported(tiny: SentenceEncoder) -> None:
    long_text = " ".join(["water"] * 100)  # far beyond max_seq_length 24
    result = tiny.encode_with_stats([long_text, "the cat", long_text])
    assert result.truncated.tolist() == [True, False, True]
    assert result.num_truncated == 2


@pytest.mark.parametrize("bad", [None, 3, b"bytes", {"text": "x"}])
def test_rejects_non_text_input(tiny: SentenceEncoder, bad: object) -> None:
    with pytest.raises(TypeError, match="texts must be"):
        tiny.encode(bad)  # type: ignore[arg-type]


def test_rejects_non_string_item_naming_its_index(tiny: SentenceEncoder) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        tiny.encode(["ok", None])  # type: ignore[list-item]


def test_rejects_bad_batch_size(tiny: SentenceEncoder) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        tiny.encode(["x"], batch_size=0)


def test_save_load_round_trip(tiny: SentenceEncoder, tmp_path: Path) -> None:
    out = tmp_path / "saved"
    tiny.save(out)
    again = SentenceEncoder.load(out, device="cpu")
    np.testing.assert_array_equal(again.encode(TEXTS), tiny.encode(TEXTS))
    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]


def test_save_replaces_existing_folder_atomically(tiny: SentenceEncoder, tmp_path: Path) -> None:
    out = tmp_path / "saved"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    tiny.save(out)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_failed_save_keeps_previous_folder(tiny: SentenceEncoder, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "saved"
    tiny.save(out)
    before = sorted(p.name for p in out.iterdir())

    def boom(path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(type(tiny.layers[1]), "save", lambda self, path: boom(path))
    with pytest.raises(OSError, match="disk full"):
        tiny.save(out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert SentenceEncoder.load(out, device="cpu").encode("the cat").shape == (32,)


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFolderError, match=r"neither modules\.json nor config\.json"):
        SentenceEncoder.load(tmp_path)


def test_missing_weights_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    (broken / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ModelFolderError, match=r"no model\.safetensors .*pytorch_model\.bin"):
        SentenceEncoder.load(broken)


def test_unknown_module_type(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    modules = json.loads((broken / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.models.LSTM"
    (broken / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelFolderError, match="unsupported module type"):
        SentenceEncoder.load(broken)


def test_missing_model_name() -> None:
    with pytest.raises(ModelNotFoundError):
        SentenceEncoder.load("./no/such/folder")


def test_similarity_uses_configured_function(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dot"
    shutil.copytree(tiny_model_dir, folder)
    cfg_file = folder / "config_sentence_transformers.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["similarity_fn_name"] = "dot"
    cfg_file.write_text(json.dumps(cfg))
    model = SentenceEncoder.load(folder, device="cpu")
    emb = model.encode(TEXTS, normalize=False)
    assert model.similarity_fn_name == "dot"
    np.testing.assert_allclose(model.similarity(emb, emb), emb @ emb.T, rtol=1e-6)
    np.testing.assert_allclose(model.similarity_pairwise(emb, emb), (emb * emb).sum(1), rtol=1e-6)
