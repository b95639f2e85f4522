"""``biencoder encode``: every input and output format, and clean failures that leave no output behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from biencoder import SentenceEncoder
from biencoder.cli import main

TEXTS = ["the cat", "a dog in the water", "what is search?"]


@pytest.fixture(scope="module")
def expected(tiny_model_dir: Path) -> np.ndarray:
    return SentenceEncoder.load(tiny_model_dir, device="cpu").encode(TEXTS)


def write_input(folder: Path, kind: str) -> tuple[Path, list[str]]:
    path = folder / f"input.{kind}"
    if kind == "txt":
        path.write_text("\n".join(TEXTS) + "\n")
        return path, []
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(TEXTS)))
        return path, ["--field", "body"]
    if kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        path.write_text(f"id{sep}sentence\n" + "".join(f"{i}{sep}{t}\n" for i, t in enumerate(TEXTS)))
        return path, ["--column", "sentence"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": TEXTS}), path)
    return path, []


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv", "tsv", "parquet"])
def test_encode_formats_to_npy(kind: str, tiny_model_dir: Path, tmp_path: Path, expected: np.ndarray) -> None:
    path, extra = write_input(tmp_path, kind)
    out = tmp_path / "out.npy"
    assert (
        main(["-q", "encode", "--model", str(tiny_model_dir), "-i", str(path), "-o", str(out), *extra]) == 0
    )
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)


def test_encode_to_parquet(tiny_model_dir: Path, tmp_path: Path, expected: np.ndarray) -> None:
    import pyarrow.parquet as pq

    path, _ = write_input(tmp_path, "txt")
    out = tmp_path / "out.parquet"
    assert main(["-q", "encode", "--model", str(tiny_model_dir), "-i", str(path), "-o", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column("text").to_pylist() == TEXTS
    np.testing.assert_allclose(
        np.array(table.column("embedding").to_pylist(), dtype=np.float32), expected, atol=1e-6
    )


def run_failing(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["-q", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, "the error must be one line"
    return err


def test_missing_input_file(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.npy"
    err = run_failing(
        ["encode", "--model", str(tiny_model_dir), "-i", str(tmp_path / "nope.txt"), "-o", str(out)], capsys
    )
    assert "input file not found" in err and "nope.txt" in err
    assert not out.exists()


def test_missing_column(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = write_input(tmp_path, "csv")
    out = tmp_path / "out.npy"
    err = run_failing(
        ["encode", "--model", str(tiny_model_dir), "-i", str(path), "-o", str(out), "--column", "x"], capsys
    )
    assert "no column 'x'" in err and "sentence" in err
    assert not out.exists()


def test_malformed_jsonl_line_named(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": broken\n')
    out = tmp_path / "out.npy"
    err = run_failing(["encode", "--model", str(tiny_model_dir), "-i", str(path), "-o", str(out)], capsys)
    assert "bad.jsonl:2" in err and "invalid JSON" in err
    assert not out.exists()


def test_non_string_field_named(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": 42}\n')
    err = run_failing(
        ["encode", "--model", str(tiny_model_dir), "-i", str(path), "-o", str(tmp_path / "o.npy")], capsys
    )
    assert "bad.jsonl:2" in err and "int" in err


def test_not_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = write_input(tmp_path, "txt")
    (tmp_path / "empty").mkdir()
    err = run_failing(
        ["encode", "--model", str(tmp_path / "empty"), "-i", str(path), "-o", str(tmp_path / "o.npy")], capsys
    )
    assert "is not a model folder" in err


def test_existing_output_survives_a_failure(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.npy"
    np.save(out, np.ones(3))
    run_failing(
        ["encode", "--model", str(tiny_model_dir), "-i", str(tmp_path / "nope.txt"), "-o", str(out)], capsys
    )
    np.testing.assert_array_equal(np.load(out), np.ones(3))


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "encode" in capsys.readouterr().out


def test_command_modules_do_not_shadow_main() -> None:
    import biencoder.cli as cli

    cli.build_parser()  # imports every command module
    assert callable(cli.main)
