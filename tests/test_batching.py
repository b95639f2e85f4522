"""The shared encode loop: every row embedded once, in the caller's order, in length-sorted batches."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from biencoder.batching import encode_in_batches, length_sorted_batches
from biencoder.protocol import Tokens


def _tokens(lengths: list[int]) -> Tokens:
    ids = [[i] * n for i, n in enumerate(lengths)]  # row i holds the id i, n times
    return Tokens(ids, [[0] * n for n in lengths], np.zeros(len(lengths), dtype=bool))


def test_rows_come_back_in_input_order() -> None:
    lengths = [3, 9, 1, 9, 5, 2, 7]
    tokens = _tokens(lengths)
    calls: list[list[int]] = []

    def run(rows: NDArray[np.int64]) -> NDArray[np.float32]:
        calls.append([len(tokens.ids[r]) for r in rows])
        # the row's id and its length, read back from the tokens the loop was given
        return np.array([[tokens.ids[r][0], len(tokens.ids[r])] for r in rows], dtype=np.float32)

    out = encode_in_batches(tokens, 2, run, batch_size=3, show_progress=False)
    np.testing.assert_array_equal(out, np.array([[i, n] for i, n in enumerate(lengths)], np.float32))
    assert calls == [[9, 9, 7], [5, 3, 2], [1]]  # longest first; ties keep input order


def test_token_budget_caps_rows_per_call() -> None:
    tokens = _tokens([8, 8, 8, 2, 2, 2, 2])
    batches = list(length_sorted_batches(tokens, 4, max_tokens=16))
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3], [4, 5, 6]]
    # one row even when it alone exceeds the budget
    assert [b.tolist() for b in length_sorted_batches(_tokens([50, 1]), 4, max_tokens=10)] == [[0], [1]]


def test_empty_input_and_bad_batch_size() -> None:
    out = encode_in_batches(_tokens([]), 5, lambda rows: pytest.fail("no call expected"), batch_size=4)
    assert out.shape == (0, 5) and out.dtype == np.float32
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        encode_in_batches(_tokens([1]), 5, lambda rows: np.zeros((len(rows), 5), np.float32), batch_size=0)
