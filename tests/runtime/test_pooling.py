"""numpy pooling against biencoder.modules.Pooling (torch), on random tokens and ragged masks."""

from __future__ import annotations

import numpy as np
import pytest

from biencoder.runtime.pooling import POOLING_KEYS, Head, pool


@pytest.mark.parametrize("mode", list(POOLING_KEYS))
@pytest.mark.parametrize("left", [False, True])
def test_pool_matches_torch(mode: str, left: bool) -> None:
    torch = pytest.importorskip("torch")
    from biencoder.modules import Pooling

    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(4, 7, 5)).astype(np.float32)
    lengths = [7, 3, 1, 5]
    mask = np.zeros((4, 7), np.int64)
    for i, n in enumerate(lengths):
        mask[i, 7 - n :] = 1 if left else 0
        mask[i, :n] = 0 if left else 1
    features = {"token_embeddings": torch.from_numpy(tokens), "attention_mask": torch.from_numpy(mask)}
    want = Pooling(5, mode)(features)["sentence_embedding"].numpy()
    np.testing.assert_allclose(pool(mode, tokens, mask), want, rtol=1e-5, atol=1e-6)


def test_head_concatenates_in_order_and_normalizes() -> None:
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(2, 3, 4)).astype(np.float32)
    mask = np.ones((2, 3), np.int64)
    head = Head(modes=("cls", "mean"), dimension=4, normalize=True)
    out = head(tokens, mask)
    assert out.shape == (2, 8) and head.output_dimension == 8
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    raw = head(tokens, mask, normalize_output=False)
    np.testing.assert_allclose(raw[:, :4], tokens[:, 0])
    with pytest.raises(ValueError, match="valid"):
        Head(modes=("median",), dimension=4)
