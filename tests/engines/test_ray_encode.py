"""`biencoder encode --engine ray` on a local Ray cluster (loopback, started once per session):
its vectors equal the single-process encoder's; an interrupted run resumes without recomputing
finished shards and without a half-written one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.engines.ray_encode import (
    RayEncodeConfig,
    count_rows,
    encode_on_ray,
    expand_inputs,
    shard_name,
)
from tests.numerics import EMBEDDING_ATOL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local cluster sized for 2 cores: bound to loopback, no dashboard, a small object store."""
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'biencoder[ray]'")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def _write_shards(rows: list[dict[str, str]], folder: Path) -> Path:
    """Three shards: two Parquet (BEIR columns), one JSONL (BEIR lines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    third = len(rows) // 3
    for n, part in enumerate((rows[:third], rows[third : 2 * third])):
        columns = {key: [r[key] for r in part] for key in ("_id", "title", "text")}
        pq.write_table(pa.table(columns), folder / f"part-{n}.parquet")
    with (folder / "part-2.jsonl").open("w", encoding="utf-8") as f:
        for r in rows[2 * third :]:
            f.write(json.dumps({**r, "metadata": {}}) + "\n")
    return folder


RAY_ROWS = 900  # of the 2,400 real passages: enough for several blocks a shard, a third of the time


@pytest.fixture(scope="module")
def shards(dl19_sample: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 900 real passages as three shards."""
    return _write_shards(dl19_sample[:RAY_ROWS], tmp_path_factory.mktemp("corpus") / "shards")


def _read(output: Path, inputs: list[Path]) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    ids: list[str] = []
    vectors = []
    for source in inputs:
        table = pq.read_table(output / shard_name(source))
        ids += table.column("id").to_pylist()
        vectors.append(np.stack(table.column("vector").to_numpy(zero_copy_only=False)))
    return ids, np.concatenate(vectors)


def _config(output: Path, minilm_path: Path, **kw: Any) -> RayEncodeConfig:
    return RayEncodeConfig(model=str(minilm_path), output=output, **kw)


def test_vectors_equal_the_single_process_encoder(
    ray_cluster: None, shards: Path, dl19_embeddings: Any, minilm_path: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    inputs = expand_inputs(shards)
    # two actors on two cores; blocks of 128 rows, so batches are composed otherwise than in one process
    report = encode_on_ray(inputs, _config(tmp_path / "out", minilm_path, actors=2, block_rows=128))
    assert len(report.written) == 3 and report.rows == RAY_ROWS and not report.skipped
    ids, vectors = _read(tmp_path / "out", inputs)
    want_ids, want, _ = dl19_embeddings
    want_ids, want = want_ids[:RAY_ROWS], want[:RAY_ROWS]
    assert ids == want_ids  # each shard keeps its input order
    assert vectors.dtype == np.float32 and vectors.shape == (RAY_ROWS, 384)
    # other processes, other thread counts, other blocks: rounding only, held to the embedding contract
    np.testing.assert_allclose(vectors, want, rtol=0, atol=EMBEDDING_ATOL)
    schema = pq.read_schema(tmp_path / "out" / shard_name(inputs[0]))
    assert schema.field("vector").type.list_size == 384
    assert schema.metadata[b"biencoder.model"] == str(minilm_path).encode()
    assert schema.metadata[b"biencoder.dimension"] == b"384"


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_where_it_stopped(
    ray_cluster: None, dl19_sample: list[dict[str, str]], minilm_path: Path, tmp_path: Path
) -> None:
    inputs = expand_inputs(_write_shards(dl19_sample[:450], tmp_path / "in"))
    out = tmp_path / "out"

    def stop_after_first(name: str) -> None:
        raise Interrupted(name)

    with pytest.raises(Interrupted) as stopped:
        encode_on_ray(inputs, _config(out, minilm_path, block_rows=100), on_shard=stop_after_first)
    first = str(stopped.value)
    assert sorted(p.name for p in out.iterdir()) == [first]  # one whole shard, nothing half-written
    (out / ".part-9.parquet.abc.tmp").write_bytes(b"half a shard")  # what a killed run leaves
    before = os.stat(out / first)
    written: list[str] = []
    report = encode_on_ray(inputs, _config(out, minilm_path, block_rows=100), on_shard=written.append)
    assert report.skipped == [first] and first not in written and len(written) == 2
    after = os.stat(out / first)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not recomputed
    assert sorted(p.name for p in out.iterdir()) == sorted(shard_name(p) for p in inputs)
    again = encode_on_ray(inputs, _config(out, minilm_path))
    assert again.written == [] and len(again.skipped) == 3
    with pytest.raises(ValueError, match=r"at fp32, not .* at int8: use another --output folder"):
        encode_on_ray(inputs, _config(out, minilm_path, precision="int8"))  # never mixed into one folder


def test_bad_inputs_say_what_and_where(ray_cluster: None, minilm_path: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises(FileNotFoundError, match="no input at"):
        expand_inputs(tmp_path / "absent")
    (tmp_path / "in").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.parquet or \.jsonl shards"):
        expand_inputs(tmp_path / "in")
    (tmp_path / "notes.txt").write_text("x\n")
    with pytest.raises(ValueError, match=r"must be \.parquet or \.jsonl"):
        expand_inputs(str(tmp_path / "*.txt"))
    pq.write_table(pa.table({"text": ["a passage"], "title": [""]}), tmp_path / "in" / "no-ids.parquet")
    with pytest.raises(ValueError, match=r"no-ids\.parquet: no id column \(_id or id\)"):
        encode_on_ray(expand_inputs(tmp_path / "in"), _config(tmp_path / "out", minilm_path))
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_shard_names_and_row_counts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n\n{"_id": "2", "text": "y"}\n')
    one, two = expand_inputs(str(tmp_path / "*" / "corpus.jsonl"))
    assert shard_name(one) != shard_name(two) and shard_name(one).startswith("corpus-")
    assert count_rows(one) == 2
    with pytest.raises(ValueError, match="precision must be fp32 or int8"):
        RayEncodeConfig(model="m", output=tmp_path, precision="fp16")
    with pytest.raises(ValueError, match="actors must be a positive integer"):
        RayEncodeConfig(model="m", output=tmp_path, actors=0)
