"""MSELoss and CoSENTLoss against sentence-transformers: the maths on random tensors, then the loss
and its gradients through the real MiniLM on real batches (STSb train pairs, SciFact claims)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from biencoder.encoder import SentenceEncoder
from biencoder.losses import CoSENTLoss, MSELoss, cosent_loss, mse_distillation_loss

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")


@pytest.mark.reference
@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_cosent_equals_sentence_transformers(scale: float) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(32, 24, dtype=torch.float64), torch.randn(32, 24, dtype=torch.float64)
    labels = torch.randint(0, 6, (32,)).double()  # many ties: tied pairs must not be compared
    reference = st_losses.CoSENTLoss(model=None, scale=scale)  # type: ignore[arg-type]
    expected = reference.compute_loss_from_embeddings([a, b], labels)
    assert abs(float(cosent_loss(a, b, labels, scale)) - float(expected)) < 1e-9


def test_cosent_is_the_pairwise_formula_and_checks_input() -> None:
    first = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    second = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cosines 1, 0, 0.7071
    labels = torch.tensor([0.0, 5.0, 5.0])  # pair 0 is scored below pairs 1 and 2
    cos = torch.tensor([1.0, 0.0, 2**-0.5])
    want = torch.log(1 + torch.exp(20 * (cos[0] - cos[1])) + torch.exp(20 * (cos[0] - cos[2])))
    assert torch.allclose(cosent_loss(first, second, labels), want)
    with pytest.raises(ValueError, match="one per pair"):
        cosent_loss(first, second, labels[:2])
    with pytest.raises(ValueError, match="scale"):
        CoSENTLoss(lambda f: f, scale=0)


@pytest.mark.reference
@pytest.mark.parametrize("columns", [1, 2])
@pytest.mark.parametrize("per_column", [False, True])
def test_mse_equals_sentence_transformers(columns: int, per_column: bool) -> None:
    torch.manual_seed(1)
    students = [torch.randn(16, 24, dtype=torch.float64) for _ in range(columns)]
    shape = (16, columns, 24) if per_column else (16, 24)
    teacher = torch.randn(*shape, dtype=torch.float64)
    targets = [teacher[:, i] for i in range(columns)] if per_column else [teacher] * columns
    expected = st_losses.MSELoss(model=None).compute_loss_from_embeddings(students, targets)  # type: ignore[arg-type]
    assert abs(float(mse_distillation_loss(students, teacher)) - float(expected)) < 1e-12
    with pytest.raises(ValueError, match="teacher embeddings must be"):
        mse_distillation_loss(students, torch.randn(16, columns + 1, 24))


def _stsb_pairs(data_dir: Path, n: int) -> tuple[list[str], list[str], list[float]]:
    path = data_dir / "stsb" / "sts-train.csv"
    if not path.is_file():
        pytest.skip(f"real data not found at {path}")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(itertools.islice(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), n))
    return [r[5] for r in rows], [r[6] for r in rows], [float(r[4]) for r in rows]


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each parameter's gradient by its name inside the BERT (``embeddings.``, ``encoder.``)."""
    return {
        n.split("model.", 1)[1]: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def _compare(ours: SentenceEncoder, loss: torch.Tensor, theirs: Any, expected: torch.Tensor) -> None:
    """Loss within 1e-5; every gradient within 1e-5 of the model's largest gradient. fp32 through six
    layers with the same weights: the embeddings agree to ~1e-7; the two CoSENT formulas (pairwise
    here, sorted suffix sums there) round apart, measured 7e-7 of the largest gradient. A relative
    bound per tensor cannot hold: the attention key biases have a true gradient of 0 (softmax does
    not see them), whose rounding noise is all there is."""
    assert abs(float(loss) - float(expected.detach())) < 1e-5, (float(loss), float(expected.detach()))
    mine, ref = _grads(ours), _grads(theirs)
    shared = mine.keys() & ref.keys()
    assert len(shared) > 90, (sorted(mine)[:3], sorted(ref)[:3])
    largest = max(float(g.abs().max()) for g in ref.values())
    worst = max(shared, key=lambda n: float((mine[n] - ref[n]).abs().max()))
    gap = float((mine[worst] - ref[worst]).abs().max())
    print(f"largest gradient {largest:.3e}; worst gap {gap:.3e} ({worst})")
    assert gap <= 1e-5 * largest, (worst, gap, largest)


@pytest.mark.slow
@pytest.mark.reference
def test_cosent_on_stsb_train_equals_sentence_transformers(minilm_path: Path, data_dir: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    first, second, scores = _stsb_pairs(data_dir, 32)
    ours = SentenceEncoder.load(minilm_path, device="cpu").eval()
    loss = CoSENTLoss(ours).forward_backward(
        [ours.tokenize(first), ours.tokenize(second)], torch.tensor(scores)
    )
    theirs = st.SentenceTransformer(str(minilm_path), device="cpu").eval()
    reference = st_losses.CoSENTLoss(theirs)
    expected = reference([_st_features(theirs, first), _st_features(theirs, second)], torch.tensor(scores))
    expected.backward()
    _compare(ours, loss, theirs, expected)


@pytest.mark.slow
@pytest.mark.reference
def test_mse_against_the_base_teacher_equals_sentence_transformers(minilm_path: Path, data_dir: Path) -> None:
    """Self-distillation as the trainer runs it: the teacher is the base model's embeddings of the same
    texts; one optimizer step later the student has moved, so the loss is not zero."""
    st = pytest.importorskip("sentence_transformers")
    texts = _stsb_pairs(data_dir, 24)[0]
    teacher = torch.from_numpy(SentenceEncoder.load(minilm_path, device="cpu").encode(texts))
    ours = SentenceEncoder.load(minilm_path, device="cpu").eval()
    theirs = st.SentenceTransformer(str(minilm_path), device="cpu").eval()
    with torch.no_grad():  # move both students off the teacher in the same way
        for model in (ours, theirs):
            for p in model.parameters():
                p.mul_(1.01)
    loss = MSELoss(ours).forward_backward([ours.tokenize(texts)], teacher)
    assert float(loss) > 1e-6
    expected = st_losses.MSELoss(theirs)([_st_features(theirs, texts)], teacher)
    expected.backward()
    _compare(ours, loss, theirs, expected)


def _st_features(model: Any, texts: list[str]) -> Any:
    return model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
