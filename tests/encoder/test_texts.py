"""read_texts: line numbering and the byte-order mark some real files (MSRP) start with."""

from __future__ import annotations

from pathlib import Path

import pytest

from biencoder.data import DataFormatError
from biencoder.data.texts import read_texts


def test_byte_order_mark_is_not_part_of_the_first_text(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufefffirst\nsecond\n".encode())
    assert read_texts(path) == ["first", "second"]


def test_non_utf8_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1\.txt: not UTF-8"):
        read_texts(path)
