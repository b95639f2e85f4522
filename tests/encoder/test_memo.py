"""MemoEncoder: the wrapped encoder's vectors, each text encoded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biencoder.encoder import SentenceEncoder
from biencoder.memo import MemoEncoder
from tests.numerics import EMBEDDING_ATOL


def test_memo_returns_the_same_vectors_and_encodes_each_text_once(tiny_model_dir: Path) -> None:
    inner = SentenceEncoder.load(tiny_model_dir, device="cpu")
    memo = MemoEncoder(inner)
    texts = ["the cat sat", "a dog runs", "the cat sat", "fish swim"]
    # the memo encodes the unique texts, a batch composed otherwise: the embedding contract's bound
    np.testing.assert_allclose(memo.encode(texts), inner.encode(texts), atol=EMBEDDING_ATOL)
    assert memo.encoded == 3
    again = memo.encode(["fish swim", "birds fly", "a dog runs"], normalize=True)
    np.testing.assert_allclose(
        again, inner.encode(["fish swim", "birds fly", "a dog runs"], normalize=True), atol=EMBEDDING_ATOL
    )
    assert memo.encoded == 4 if inner.normalizes else memo.encoded == 7
    assert memo.encode("the cat sat").shape == (inner.dimension,)
    assert memo.encode([]).shape == (0, inner.dimension)
    assert memo.similarity_fn_name == inner.similarity_fn_name
