"""Unpadded training (length groups): the same loss and gradients as the padded batch and as
sentence-transformers', a dropout curve like the padded one's, bf16 autocast near fp32."""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from biencoder.data.sources import read_beir_pairs
from biencoder.encoder import SentenceEncoder
from biencoder.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
from biencoder.training import TrainConfig, train
from biencoder.unpad import Buckets, bucket, length_groups
from tests.training.helpers import without_dropout

# Loss and gradients of two batchings of the same rows differ by float32 rounding only: a row's
# maths does not see its neighbours (padding is masked), but the BLAS sums in another order for
# another matrix shape. The bound, 1e-5, is ~100 float32 ulps of the largest gradient
# entries (~0.3): the accumulated rounding of 6 layers of 384-wide reductions stays well inside it
# (measured: 4e-6 at most).
GRAD_ATOL = 1e-5
LOSS_ATOL = 1e-5


def _cost(lengths: list[int], groups: list[list[int]], overhead: int) -> int:
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def _best_by_brute_force(lengths: list[int], overhead: int, max_tokens: int | None) -> int:
    """Every partition of the sorted order into runs (2^(n-1) of them)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for cut, i in zip(cuts, order[1:], strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(i)
        groups.append(current)
        if max_tokens is not None and any(
            len(g) > 1 and len(g) * max(lengths[i] for i in g) > max_tokens for g in groups
        ):
            continue
        cost = _cost(lengths, groups, overhead)
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_are_an_optimal_partition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 200, size=int(rng.integers(1, 10))).tolist()
    overhead = int(rng.choice([0, 20, 96, 400]))
    max_tokens = None if seed % 2 else 300
    groups = length_groups(lengths, overhead, max_tokens)
    positions = np.concatenate(groups)
    assert sorted(positions.tolist()) == list(range(len(lengths)))  # every row exactly once
    longest = [max(lengths[i] for i in g) for g in groups]
    assert longest == sorted(longest, reverse=True)
    as_lists = [g.tolist() for g in groups]
    assert _cost(lengths, as_lists, overhead) == _best_by_brute_force(lengths, overhead, max_tokens)
    if max_tokens is not None:
        assert all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= max_tokens for g in as_lists)


def test_length_groups_edge_cases() -> None:
    assert length_groups([]) == []
    assert [g.tolist() for g in length_groups([5, 5, 5], overhead=10)] == [[0, 1, 2]]  # equal: one group
    assert [g.tolist() for g in length_groups([100, 2], overhead=0)] == [[0], [1]]  # free calls: split
    assert [g.tolist() for g in length_groups([50], max_tokens=10)] == [[0]]  # over budget alone
    with pytest.raises(ValueError, match="overhead"):
        length_groups([3], overhead=-1)
    with pytest.raises(ValueError, match="max_tokens"):
        length_groups([3], max_tokens=0)


def test_buckets_put_embeddings_back_in_order(tiny_model_dir: Path) -> None:
    model = SentenceEncoder.load(tiny_model_dir, device="cpu").eval()
    texts = [
        "a",
        "the cat is on the mat today",
        "what",
        "a dog and a cat",
        "is it",
        "the query of the passage",
    ]
    tokens = model.transformer.tokenize_unpadded(texts)
    column = bucket(
        lambda rows: model.transformer.collate(tokens, list(rows)),
        [len(x) for x in tokens.ids],
        torch.device("cpu"),
        overhead=0,
    )
    assert isinstance(column, Buckets) and len(column.parts) > 1 and len(column) == len(texts)
    assert column.padded_tokens < len(texts) * max(len(x) for x in tokens.ids)
    with torch.no_grad():
        got = column.embed(model)
        expected = model(dict(model.transformer.collate(tokens)))["sentence_embedding"]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def minilm_no_dropout(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return without_dropout(minilm_path, tmp_path_factory.mktemp("unpad") / "minilm")


def _scifact_columns(data_dir: Path, n: int) -> list[list[str]]:
    pairs = read_beir_pairs(data_dir / "scifact")
    return [pairs.anchors[:n], pairs.positives[:n]]


def _msmarco_columns(data_dir: Path, n: int) -> list[list[str]]:
    """(query, positive passage, hard negative) rows of the real MS MARCO triples sample."""
    path = data_dir / "msmarco-triples-sample" / "triplets_raw.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with path.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) == 3][:n]
    return [list(c) for c in zip(*rows, strict=True)]


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def _ours(
    model: SentenceEncoder, columns: list[list[str]], unpad: bool, cached: bool
) -> tuple[float, list[torch.Tensor]]:
    transformer, device = model.transformer, torch.device("cpu")
    tokens = [transformer.tokenize_unpadded(c) for c in columns]
    budget = 4 * 128 if cached else None  # several token-budget micro-batches per column
    features = [
        bucket(
            lambda rows, t=t: transformer.collate(t, list(rows)),
            [len(x) for x in t.ids],
            device,
            max_tokens=budget,
        )
        if unpad
        else transformer.collate(t)
        for t in tokens
    ]
    loss_fn = (
        CachedMultipleNegativesRankingLoss(model, mini_batch_size=4)
        if cached
        else MultipleNegativesRankingLoss(model)
    )
    model.zero_grad(set_to_none=True)
    loss = float(loss_fn.forward_backward(features))
    return loss, _grads(model)


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("source", ["scifact", "msmarco"])
def test_unpadded_loss_and_gradients_equal_padded_and_sentence_transformers(
    source: str, minilm_no_dropout: Path, data_dir: Path
) -> None:
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss as STLoss

    columns = _scifact_columns(data_dir, 12) if source == "scifact" else _msmarco_columns(data_dir, 12)
    reference = st.SentenceTransformer(str(minilm_no_dropout), device="cpu")
    reference.max_seq_length = 128
    reference.train()
    st_loss = STLoss(reference)([reference.tokenize(c) for c in columns], labels=None)
    st_loss.backward()
    expected_loss, expected = float(st_loss.detach()), _grads(reference)

    model = SentenceEncoder.load(minilm_no_dropout, device="cpu")
    model.max_seq_length = 128
    model.train()
    tokens = [model.transformer.tokenize_unpadded(c) for c in columns]
    # the batch really is split by length (SciFact's abstracts fill 128 tokens: its queries split)
    assert any(len(length_groups([len(x) for x in t.ids])) > 1 for t in tokens)
    for unpad, cached in [(False, False), (True, False), (True, True)]:
        loss, grads = _ours(model, columns, unpad, cached)
        assert abs(loss - expected_loss) < LOSS_ATOL, (unpad, cached)
        assert len(grads) == len(expected)
        for got, want in zip(grads, expected, strict=True):
            torch.testing.assert_close(
                got, want, atol=GRAD_ATOL, rtol=0, msg=f"unpad {unpad} cached {cached}"
            )


def _loss_curve(pairs: Path, model: Path, out: Path, seed: int, unpad: bool, **kw: object) -> list[float]:
    config = TrainConfig(
        data=(str(pairs),),
        output_dir=str(out),
        base_model=str(model),
        batch_size=16,
        max_steps=30,
        learning_rate=5e-4,
        max_seq_length=48,
        seed=seed,
        unpad=unpad,
        save_steps=1000,
        device="cpu",
        **kw,  # type: ignore[arg-type]
    )
    return train(config, show_progress=False).step_losses


def _real_pairs(data_dir: Path, path: Path, n: int) -> Path:
    anchors, positives = _scifact_columns(data_dir, n)
    path.write_text(
        "\n".join(json.dumps({"anchor": a, "positive": p}) for a, p in zip(anchors, positives, strict=True))
    )
    return path


@pytest.mark.slow
def test_dropout_loss_curve_stays_within_the_padded_seed_spread(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """With dropout on, the masks differ from the padded path's (other shapes): the curve may move
    as much as another seed moves it, no more. Tiny BERT, 30 steps of real SciFact pairs."""
    pairs = _real_pairs(data_dir, tmp_path / "pairs.jsonl", 480)
    padded = [_loss_curve(pairs, tiny_model_dir, tmp_path / f"p{s}", s, unpad=False) for s in (1, 2, 3, 4)]
    unpadded = _loss_curve(pairs, tiny_model_dir, tmp_path / "u", 1, unpad=True)
    assert all(len(c) == 30 for c in [*padded, unpadded])
    mean = [statistics.fmean(step) for step in zip(*padded, strict=True)]

    def distance(curve: list[float]) -> float:  # mean absolute gap to the padded seeds' mean curve
        return statistics.fmean(abs(a - b) for a, b in zip(curve, mean, strict=True))

    spread = max(distance(c) for c in padded)
    assert distance(unpadded) <= 1.5 * spread, (distance(unpadded), spread)
    assert statistics.fmean(unpadded[-5:]) < statistics.fmean(unpadded[:5])  # it trains


@pytest.mark.slow
def test_bf16_autocast_on_cpu_stays_near_fp32(minilm_path: Path, data_dir: Path, tmp_path: Path) -> None:
    """bf16 autocast (fp32 master weights) over 3 steps of MiniLM: every step's loss within 1e-2 of fp32's.

    The transformer runs in bf16 (8 bits of mantissa); the scores and the loss stay float32 (a bf16
    cosine times the scale of 20 alone would move the loss by ~1e-2). Measured: gaps of 1.2e-3 on
    average, 3.2e-3 at most (10 steps at length 48). bf16 matmuls are emulated on CPUs without AVX512-bf16,
    about 9 s a step here, hence the short run."""
    pairs = _real_pairs(data_dir, tmp_path / "pairs.jsonl", 24)

    def curve(precision: str) -> list[float]:
        config = TrainConfig(
            data=(str(pairs),),
            output_dir=str(tmp_path / precision),
            base_model=str(minilm_path),
            batch_size=8,
            max_steps=3,
            max_seq_length=32,
            precision=precision,
            save_steps=1000,
            device="cpu",
        )
        return train(config, show_progress=False).step_losses

    fp32, bf16 = curve("fp32"), curve("bf16")
    assert len(fp32) == len(bf16) == 3
    gaps = [abs(a - b) for a, b in zip(fp32, bf16, strict=True)]
    assert max(gaps) < 1e-2, gaps
    assert fp32 != bf16  # autocast really ran in bf16
