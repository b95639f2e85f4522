"""Parallel-mask dropout: F.dropout's distribution and gradient, reproducible from torch's seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from biencoder import SentenceEncoder
from biencoder.modules import dropout as dropout_module
from biencoder.modules.dropout import Dropout, dropout, dropout_mask, use_parallel_dropout


def test_mask_frequency_and_independence_across_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dropout_module, "PART", 1000)  # 200 independently seeded parts
    torch.manual_seed(0)
    mask = dropout_mask((200, 1000), 0.1)
    assert mask.dtype == torch.bool and mask.shape == (200, 1000)
    assert abs(mask.float().mean().item() - 0.1) < 0.002  # 200,000 draws: sd 0.00067
    per_part = mask.float().mean(dim=1)
    assert per_part.std().item() < 0.02  # every part drops ~10% (sd 0.0095 for 1,000 draws)
    assert not torch.equal(mask[0], mask[1])  # parts are not copies of one stream


def test_seeded_and_independent_of_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dropout_module, "PART", 4096)
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(3)
        first = dropout_mask((50, 1000), 0.2)
        torch.set_num_threads(1)
        torch.manual_seed(3)
        serial = dropout_mask((50, 1000), 0.2)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, serial)
    assert not torch.equal(first, dropout_mask((50, 1000), 0.2))  # the generator moved on


def test_values_and_gradient() -> None:
    x = torch.randn(300, 300, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.25)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.25) < 0.01
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.75)
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, (~dropped).float() / 0.75)
    assert dropout(x, 0.25, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_model_swap(tiny_model_dir: Path) -> None:
    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    texts = ["one two three", "four five six seven"]
    before = encoder.encode(texts)
    replaced = use_parallel_dropout(encoder)
    assert replaced > 0
    assert not [m for m in encoder.modules() if type(m) is nn.Dropout]
    assert all(m.p > 0 for m in encoder.modules() if isinstance(m, Dropout))
    torch.testing.assert_close(
        torch.from_numpy(encoder.encode(texts)), torch.from_numpy(before), atol=0, rtol=0
    )
    features = encoder.transformer.tokenize(texts)
    encoder.train()
    torch.manual_seed(0)
    first = encoder(dict(features))["sentence_embedding"]
    torch.manual_seed(0)
    second = encoder(dict(features))["sentence_embedding"]
    torch.manual_seed(1)
    third = encoder(dict(features))["sentence_embedding"]
    assert torch.equal(first, second) and not torch.equal(first, third)
