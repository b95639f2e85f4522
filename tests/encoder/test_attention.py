"""Chunked training attention against torch's scaled_dot_product_attention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from biencoder import SentenceEncoder
from biencoder.modules import attention
from biencoder.modules.attention import chunked_attention, use_chunked_attention


def _inputs(batch: int = 5, heads: int = 3, length: int = 7, dim: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(batch, heads, length, dim, generator=generator, requires_grad=True) for _ in range(3)]


def _padding_mask(batch: int, length: int) -> torch.Tensor:
    lengths = torch.tensor([length, 3, 5, 2, length][:batch])
    keep = torch.arange(length)[None, :] < lengths[:, None]  # [b, k]
    return keep[:, None, None, :].expand(batch, 1, length, length)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_equals_sdpa_without_dropout(mask_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", 2 * 3 * 7 * 7)  # 2 rows a chunk: 3 chunks
    q, k, v = _inputs()
    mask = None if mask_kind == "none" else _padding_mask(5, 7)
    if mask_kind == "additive":
        mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    grad = torch.randn(5, 7, 3, 4)
    ours = chunked_attention(q, k, v, mask, dropout=0.0, scale=0.5)
    ours_grads = torch.autograd.grad(ours, (q, k, v), grad)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5).transpose(1, 2)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    assert ours.shape == (5, 7, 3, 4) and ours.is_contiguous()
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    for a, b in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_dropout_zeroes_probabilities_and_rescales_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """With value = identity the output is the dropped-out probability matrix itself."""
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", 1000)
    batch, heads, length, p = 400, 2, 6, 0.1
    q, k, _ = (t.detach() for t in _inputs(batch, heads, length, 4))
    v = torch.eye(length).expand(batch, heads, length, length)
    probs = (q @ k.transpose(-1, -2) * 0.5).softmax(-1)  # [b, h, q, k]
    torch.manual_seed(1)
    out = chunked_attention(q, k, v, None, dropout=p, scale=0.5).transpose(1, 2)  # [b, h, q, k]
    dropped = out == 0
    assert abs(dropped.float().mean().item() - p) < 0.01  # 28,800 draws: 5 standard deviations
    torch.testing.assert_close(out[~dropped], probs[~dropped] / (1 - p))
    torch.manual_seed(1)
    again = chunked_attention(q, k, v, None, dropout=p, scale=0.5).transpose(1, 2)
    assert torch.equal(out, again)  # a seeded run repeats itself


def test_model_switch_keeps_inference_and_saved_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    texts = ["a short one", "a rather longer sentence with more words in it", "mid length text"]
    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    before = encoder.encode(texts)
    assert use_chunked_attention(encoder.transformer.model)
    assert torch.equal(torch.from_numpy(encoder.encode(texts)), torch.from_numpy(before))
    encoder.save(tmp_path / "saved")
    assert attention.NAME not in (tmp_path / "saved" / "config.json").read_text()
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "bert"


def test_training_forward_goes_through_chunks(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    assert use_chunked_attention(encoder.transformer.model)
    calls: list[float] = []
    real = attention.chunked_attention

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(float(args[4]))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(attention, "chunked_attention", spy)
    features = encoder.transformer.tokenize(["one two three", "four five"])
    encoder.train()
    torch.manual_seed(0)
    first = encoder(dict(features))["sentence_embedding"]
    torch.manual_seed(0)
    second = encoder(dict(features))["sentence_embedding"]
    layers = encoder.transformer.model.config.num_hidden_layers
    assert calls == [encoder.transformer.model.config.attention_probs_dropout_prob] * (2 * layers)
    assert torch.equal(first, second)
    encoder.eval()
    encoder(dict(features))
    assert len(calls) == 2 * layers  # inference takes SDPA
