"""The loss against sentence-transformers' MNRL; the cached loss against the plain one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from biencoder.encoder import SentenceEncoder
from biencoder.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
    multiple_negatives_ranking_loss,
)
from biencoder.losses.ranking import _rows
from biencoder.modules.attention import use_chunked_attention
from biencoder.modules.dropout import use_parallel_dropout


@pytest.mark.reference
@pytest.mark.parametrize("with_negatives", [False, True])
@pytest.mark.parametrize("scale", [20.0, 7.5])
def test_loss_equals_sentence_transformers(with_negatives: bool, scale: float) -> None:
    st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    torch.manual_seed(0)
    a, p, n = (torch.randn(16, 24, dtype=torch.float64) for _ in range(3))
    reference = st_losses.MultipleNegativesRankingLoss(model=None, scale=scale)  # type: ignore[arg-type]
    columns = [a, p, n] if with_negatives else [a, p]
    expected = reference.compute_loss_from_embeddings(columns, labels=None)
    ours = multiple_negatives_ranking_loss(a, p, n if with_negatives else None, scale)
    assert abs(float(ours) - float(expected)) < 1e-6


def test_loss_is_cross_entropy_and_checks_input() -> None:
    torch.manual_seed(1)
    a, p = torch.randn(8, 5), torch.randn(8, 5)
    logits = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(p, dim=1).T * 20
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(8))
    assert torch.allclose(multiple_negatives_ranking_loss(a, p), expected, atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        multiple_negatives_ranking_loss(a, p, scale=0.0)
    with pytest.raises(ValueError, match="offset"):
        multiple_negatives_ranking_loss(a, p[:4])


def _grads(model: SentenceEncoder) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mini_batch_size", [1, 3, 16])
def test_cached_gradients_equal_plain(tiny_model_dir: Path, mini_batch_size: int) -> None:
    model = SentenceEncoder.load(tiny_model_dir, device="cpu").eval()
    anchors = ["what is a cat", "how big is the dog", "the red car", "blue water is fast", "a bird in a tree"]
    positives = ["the cat is small", "a dog is big", "a fast car", "water and fire", "the bird has a house"]
    negatives = ["fire", "earth and air", "green tree", "slow fish", "bad model"]
    features = [model.tokenize(t) for t in (anchors, positives, negatives)]
    plain = MultipleNegativesRankingLoss(model)
    loss = plain.forward_backward([dict(f) for f in features])
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    cached = CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)
    cached_loss = cached.forward_backward([dict(f) for f in features])
    got = _grads(model)
    assert abs(float(loss) - float(cached_loss)) < 1e-6
    assert expected.keys() == got.keys() and expected
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("cpu_kernels", [False, True])
def test_cached_replays_dropout(tiny_model_dir: Path, cpu_kernels: bool) -> None:
    """With dropout on, the re-embedding pass must see the masks of the first pass (also with the
    trainer's chunked attention and parallel dropout)."""
    model = SentenceEncoder.load(tiny_model_dir, device="cpu").train()
    if cpu_kernels:
        assert use_chunked_attention(model.transformer.model)
        assert use_parallel_dropout(model) > 0
    features = [
        model.tokenize(["a cat", "the dog", "big fish", "red car"]),
        model.tokenize(["a small cat", "dog house", "fish water", "car fast"]),
    ]
    cached = CachedMultipleNegativesRankingLoss(model, mini_batch_size=2)
    torch.manual_seed(3)
    cached.forward_backward([dict(f) for f in features])
    got = _grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # the plain loss with the same masks: embed in the same chunks, same RNG order
    embs = []
    for f in features:
        for s in (0, 2):
            embs.append(model(_rows(f, s, s + 2))["sentence_embedding"])
    loss = multiple_negatives_ranking_loss(torch.cat(embs[:2]), torch.cat(embs[2:]))
    loss.backward()
    for name, grad in _grads(model).items():
        assert torch.allclose(grad, got[name], atol=1e-6, rtol=1e-4), name


@pytest.mark.reference
def test_several_negative_columns_equal_sentence_transformers() -> None:
    st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    torch.manual_seed(3)
    columns = [torch.randn(8, 12, dtype=torch.float64) for _ in range(5)]  # anchor, positive, 3 negatives
    expected = st_losses.MultipleNegativesRankingLoss(model=None).compute_loss_from_embeddings(
        columns, labels=None
    )  # type: ignore[arg-type]
    ours = MultipleNegativesRankingLoss(model=lambda f: f).loss_from_embeddings(columns)
    assert abs(float(ours) - float(expected)) < 1e-6
