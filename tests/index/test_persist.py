"""The index folder: round trips, memory mapping, atomic writes, clear errors on damage; Parquet export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biencoder.index import Index, IndexConfig, IndexFormatError
from biencoder.index import storage as storage_mod


def _built(
    kind: str = "exact", quantization: str = "none", n: int = 300, dim: int = 16
) -> tuple[Index, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    index = Index(config=IndexConfig(kind=kind, quantization=quantization), model_name="tiny")
    index.add([f"id{i}" for i in range(n)], x)
    index.remove(["id3", "id7"])
    index.add("id9", x[:1] * -1)  # upsert
    return index, rng.standard_normal((8, dim)).astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "quantization"),
    [
        ("exact", "none"),
        ("exact", "int8"),
        ("exact", "binary"),
        ("hnsw", "none"),
        ("hnsw", "int8"),
        ("hnsw", "binary"),
    ],
)
def test_round_trip_memory_mapped(tmp_path: Path, kind: str, quantization: str) -> None:
    index, q = _built(kind, quantization)
    before = index.search(q, 10)
    index.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix", verify=True)
    assert isinstance(loaded._blocks[0], np.memmap)
    assert len(loaded) == len(index) and loaded.ids == index.ids and loaded.model_name == "tiny"
    after = loaded.search(q, 10)
    assert after.ids == before.ids
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    # still changeable after loading: add, upsert, remove, save again over itself
    loaded.add(["x1", "id0"], q[:2])
    loaded.remove("id1")
    assert loaded.search(q[:1], 1).ids == [["x1"]]
    loaded.save(tmp_path / "ix")
    again = Index.load(tmp_path / "ix")
    assert again.ids == loaded.ids
    assert again.search(q, 5).ids == loaded.search(q, 5).ids


def test_manifest_describes_the_index(tmp_path: Path) -> None:
    index, _ = _built()
    index.save(tmp_path / "ix")
    m = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert (m["format_version"], m["dim"], m["count"], m["live"], m["dtype"], m["metric"]) == (
        1,
        16,
        301,
        298,
        "float32",
        "cosine",
    )
    assert m["model_name"] == "tiny"
    assert set(m["files"]) == {"ids.json", "alive.npy", "vectors.npy"}


def test_damaged_folders_give_clear_errors(tmp_path: Path) -> None:
    index, _ = _built()
    path = tmp_path / "ix"
    index.save(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        Index.load(tmp_path / "nothing")
    manifest = (path / "manifest.json").read_text()
    (path / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match=r"manifest.json is missing.*half-written"):
        Index.load(path)
    (path / "manifest.json").write_text(manifest[: len(manifest) // 2])
    with pytest.raises(IndexFormatError, match="corrupted manifest"):
        Index.load(path)
    (path / "manifest.json").write_text(manifest.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(IndexFormatError, match="format version 99"):
        Index.load(path)
    (path / "manifest.json").write_text(manifest)
    vectors = (path / "vectors.npy").read_bytes()
    (path / "vectors.npy").write_bytes(vectors[:-100])
    with pytest.raises(IndexFormatError, match=r"vectors.npy: \d+ bytes, the manifest says \d+: truncated"):
        Index.load(path)
    flipped = bytearray(vectors)
    flipped[-5] ^= 0xFF
    (path / "vectors.npy").write_bytes(bytes(flipped))
    Index.load(path)  # sizes agree: only verify=True reads every byte
    with pytest.raises(IndexFormatError, match="sha256 differs"):
        Index.load(path, verify=True)


def test_dimension_mismatch_with_the_encoder(tmp_path: Path, tiny_model_dir: Path) -> None:
    from biencoder import SentenceEncoder

    index, _ = _built(dim=16)
    index.save(tmp_path / "ix")
    with pytest.raises(ValueError, match=r"holds 16-dimensional vectors.*encoder gives 32"):
        Index.load(tmp_path / "ix", encoder=SentenceEncoder.load(tiny_model_dir, device="cpu"))


def test_a_save_that_dies_leaves_the_previous_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index, q = _built()
    path = tmp_path / "ix"
    index.save(path)
    expected = Index.load(path).search(q, 5).ids
    index.add("late", q[:1])

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage_mod, "write_manifest", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save(path)
    assert Index.load(path, verify=True).search(q, 5).ids == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no temporary left behind


def test_parquet_export(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    index, _ = _built()
    index.export_parquet(tmp_path / "out.parquet", batch_rows=64)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["id", "vector"]
    assert table.column("id").to_pylist() == index.ids
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(vectors, np.stack([index.get(i) for i in index.ids]))
    assert str(table.schema.field("vector").type) == "fixed_size_list<element: float>[16]"


def test_texts_are_kept_saved_loaded_and_upserted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    index = Index(8)
    index.add(["a", "b"], rng.normal(size=(2, 8)))  # no texts yet
    assert not index.has_texts and index.texts_of(["a"]) == [None]
    index.add(["c", "d"], rng.normal(size=(2, 8)), texts=["text c", "text d"])
    index.add(["c"], rng.normal(size=(1, 8)), texts=["text c, replaced"])
    index.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix", verify=True)
    assert loaded.has_texts
    assert loaded.texts_of(["a", "c", "d", "nope"]) == [None, "text c, replaced", "text d", None]
    with pytest.raises(ValueError, match="one per id"):
        index.add(["e"], rng.normal(size=(1, 8)), texts=["x", "y"])
    plain = Index(8)
    plain.add(["a"], rng.normal(size=(1, 8)))
    plain.save(tmp_path / "plain")
    assert not (tmp_path / "plain" / "texts.json").exists() and not Index.load(tmp_path / "plain").has_texts
