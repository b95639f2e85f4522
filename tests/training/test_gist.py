"""GISTEmbedLoss against sentence-transformers' on the same embeddings (model's and guide's)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from biencoder.losses import GISTEmbedLoss, gist_embed_loss


def _reference(
    monkeypatch: pytest.MonkeyPatch, tokenizer: Any, model_cols: list[Any], guide_cols: list[Any], **kw: Any
) -> float:
    module = pytest.importorskip("sentence_transformers.sentence_transformer.losses.gist_embed")
    model = SimpleNamespace(tokenizer=tokenizer, max_seq_length=256)
    guide = SimpleNamespace(tokenizer=tokenizer, max_seq_length=256)
    # Each "model" returns its fixed embeddings: the loss's maths is compared, nothing else.
    monkeypatch.setattr(module, "embed_columns", lambda m, feats: model_cols if m is model else guide_cols)
    loss = module.GISTEmbedLoss(model, guide, **kw)  # type: ignore[arg-type]
    return float(loss([{} for _ in model_cols], labels=None))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.mark.reference
@pytest.mark.parametrize("strategy,margin", [("absolute", 0.0), ("absolute", 0.1), ("relative", 0.05)])
@pytest.mark.parametrize("with_negatives", [False, True])
@pytest.mark.parametrize("contrast", [(True, True), (False, True), (True, False), (False, False)])
def test_gist_equals_sentence_transformers(
    monkeypatch: pytest.MonkeyPatch,
    tokenizer: Any,
    strategy: str,
    margin: float,
    with_negatives: bool,
    contrast: tuple[bool, bool],
) -> None:
    torch.manual_seed(hash((strategy, margin, with_negatives, contrast)) % 1000)
    base = torch.randn(12, 16, dtype=torch.float64)
    a, p, n = (
        base + 0.3 * torch.randn(12, 16, dtype=torch.float64),
        base,
        torch.randn(12, 16, dtype=torch.float64),
    )
    # A guide that agrees with the model only roughly: some in-batch candidates get masked.
    ga, gp, gn = (x + 0.5 * torch.randn_like(x) for x in (a, p, n))
    p[3] = p[4] + 1e-3  # a near-duplicate positive: a false negative the guide should mask
    gp[3] = gp[4]
    cols, guide = ([a, p, n], [ga, gp, gn]) if with_negatives else ([a, p], [ga, gp])
    kw = {
        "temperature": 0.05,
        "margin_strategy": strategy,
        "margin": margin,
        "contrast_anchors": contrast[0],
        "contrast_positives": contrast[1],
    }
    expected = _reference(monkeypatch, tokenizer, cols, guide, **kw)
    ours = gist_embed_loss(
        a,
        p,
        n if with_negatives else None,
        ga,
        gp,
        gn if with_negatives else None,
        kw.pop("temperature"),
        **kw,  # type: ignore[arg-type]
    )
    assert abs(float(ours) - expected) < 1e-6


def test_gist_masks_what_the_guide_calls_a_false_negative() -> None:
    a = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    p = torch.tensor([[1.0, 0.1], [0.0, 1.0]])  # anchor 1 is closer to positive 0 than to its own
    guide_same = gist_embed_loss(a, p, None, a, p, contrast_anchors=False, contrast_positives=False)
    plain = torch.nn.functional.cross_entropy(
        (torch.nn.functional.normalize(a) @ torch.nn.functional.normalize(p).T) / 0.01, torch.arange(2)
    )
    assert float(guide_same) < float(plain)  # the guide masked anchor 1's false negative
    with pytest.raises(ValueError, match="margin_strategy"):
        gist_embed_loss(a, p, None, a, p, margin_strategy="cosine")
    with pytest.raises(ValueError, match="together"):
        gist_embed_loss(a, p, p, a, p)


def test_gist_module_trains_the_model_not_the_guide(tiny_model_dir: Path) -> None:
    from biencoder.encoder import SentenceEncoder

    model = SentenceEncoder.load(tiny_model_dir, device="cpu")
    guide = SentenceEncoder.load(tiny_model_dir, device="cpu")
    loss = GISTEmbedLoss(model, guide, temperature=0.05)
    features = [model.tokenize(["the cat", "a dog", "red car"]), model.tokenize(["a cat", "the dog", "car"])]
    value = loss.forward_backward([dict(f) for f in features])
    assert torch.isfinite(value)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None for p in guide.parameters())
    assert loss.card_name == "GISTEmbedLoss" and loss.config_dict()["temperature"] == 0.05


def test_train_command_with_the_gist_loss_records_it_in_the_card(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from biencoder.cli import main
    from biencoder.training import TrainConfig
    from tests.training.helpers import write_pairs

    data = write_pairs(tmp_path / "pairs.jsonl", 16)
    out = tmp_path / "out"
    argv = ["-q", "train", "--base", str(tiny_model_dir), "--data", str(data), "--output", str(out)]
    argv += ["--batch-size", "4", "--max-steps", "2", "--max-seq-length", "24", "--device", "cpu"]
    argv += ["--loss", "gist", "--guide", str(tiny_model_dir), "--gist-margin", "0.05"]
    assert main(argv) == 0
    card = (out / "README.md").read_text()
    assert "GISTEmbedLoss" in card and '"margin": 0.05' in card
    with pytest.raises(ValueError, match="needs a guide_model"):
        TrainConfig(data=("x",), output_dir="o", loss="gist")
    with pytest.raises(ValueError, match="gist_margin_strategy"):
        TrainConfig(data=("x",), output_dir="o", loss="gist", guide_model="g", gist_margin_strategy="cosine")
