"""The encode loop both runtimes share: tokenised texts, length-sorted batches, one model call each.

The PyTorch encoder and the ONNX encoder differ only in how one batch of rows becomes
embeddings; the order of rows, the batch boundaries, the progress bar and the output array are
the same, so they live here once. Never imports torch (the ONNX path uses it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import NDArray

from biencoder.progress import track
from biencoder.protocol import TokenBatch


def length_sorted_batches(
    tokens: TokenBatch, batch_size: int, max_tokens: int | None = None
) -> Iterator[NDArray[np.int64]]:
    """Row indices in batches of similar length, longest first: little padding per batch.

    With ``max_tokens`` a batch also holds at most that many padded tokens (at least one row).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    lengths = np.fromiter((len(x) for x in tokens.ids), dtype=np.int64, count=len(tokens.ids))
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        rows = batch_size
        if max_tokens is not None:
            rows = min(rows, max(1, max_tokens // max(1, int(lengths[order[start]]))))
        yield order[start : start + rows]
        start += rows


def encode_in_batches(
    tokens: TokenBatch,
    dimension: int,
    run: Callable[[NDArray[np.int64]], NDArray[np.float32]],
    batch_size: int,
    max_tokens: int | None = None,
    show_progress: bool | None = None,
) -> NDArray[np.float32]:
    """[n, dimension] float32: ``run(rows)`` embeds each length-sorted batch of rows.

    The progress bar counts texts; by default it shows on a terminal when there is more than
    one batch.
    """
    out = np.empty((len(tokens.ids), dimension), dtype=np.float32)
    if not tokens.ids:
        return out
    batches = list(length_sorted_batches(tokens, batch_size, max_tokens))
    if show_progress is None:
        show_progress = sys.stderr.isatty() and len(batches) > 1
    for rows in track(batches, "Encoding", "text", total=len(tokens.ids), show=show_progress, weight=len):
        out[rows] = run(rows)
    return out
