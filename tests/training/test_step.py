"""One optimizer step of our trainer against sentence-transformers' loss with torch's AdamW."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from biencoder.data.sampling import epoch_batches
from biencoder.data.sources import read_beir_pairs
from biencoder.training import TrainConfig, train


def _no_dropout_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.slow
@pytest.mark.reference
def test_one_step_matches_sentence_transformers(minilm_path: Path, data_dir: Path, tmp_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model_dir = _no_dropout_copy(minilm_path, tmp_path / "minilm")
    pairs = read_beir_pairs(data_dir / "scifact")
    rows = [{"anchor": pairs.anchors[i], "positive": pairs.positives[i]} for i in range(24)]
    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = TrainConfig(
        data=(str(data_file),),
        output_dir=str(tmp_path / "out"),
        base_model=str(model_dir),
        batch_size=16,
        max_steps=1,
        max_seq_length=128,
        device="cpu",
    )
    train(config, show_progress=False)

    reference = st.SentenceTransformer(str(model_dir), device="cpu")
    reference.max_seq_length = 128
    reference.train()
    batch = epoch_batches([len(rows)], 16, config.seed, 0)[0].rows
    features = [reference.tokenize([rows[i][c] for i in batch]) for c in ("anchor", "positive")]
    optimizer = torch.optim.AdamW(
        reference.parameters(), lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    loss = MultipleNegativesRankingLoss(reference)(features, labels=None)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    optimizer.step()

    ours = st.SentenceTransformer(str(tmp_path / "out"), device="cpu")
    before = st.SentenceTransformer(str(model_dir), device="cpu").state_dict()
    expected = reference.state_dict()
    got = ours.state_dict()
    moved = 0
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-5, rtol=0), name
        moved += int(not torch.equal(value, before[name]))
    assert moved > 50  # the step really changed the weights that it compares


def test_optimizer_is_bit_identical_to_torch_default_adamw(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Our AdamW (foreach kernels, decay groups) moves the weights exactly as torch's default AdamW."""
    from biencoder.encoder import SentenceEncoder
    from biencoder.training.step import make_optimizer

    config = TrainConfig(data=("x",), output_dir=str(tmp_path), weight_decay=0.01, learning_rate=1e-3)
    ours, ref = (SentenceEncoder.load(tiny_model_dir, device="cpu") for _ in range(2))
    no_decay = [p for n, p in ref.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in ref.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    reference = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3
    )
    optimizer = make_optimizer(config, ours)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        optimizer.step()
        reference.step()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q), name
