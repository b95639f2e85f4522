"""onnx_twin: the ONNX runtime of a live encoder's weights gives its embeddings and its metrics."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from biencoder.encoder import SentenceEncoder
from tests.numerics import CROSS_RUNTIME_ATOL, cosine_atol, pearson_atol
from tests.tiny import WORDS

TEXTS = [" ".join(WORDS[i : i + 3 + i % 5]) for i in range(0, 40, 3)]


def test_twin_follows_the_current_weights_and_cleans_up(tiny_model_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    from biencoder.runtime.graphs import onnx_twin

    encoder = SentenceEncoder.load(tiny_model_dir, device="cpu")
    with torch.no_grad():  # weights that no file holds: the twin must see these
        for p in encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = set(Path(tempfile.gettempdir()).glob("biencoder-twin-*"))
    with onnx_twin(encoder) as twin:
        assert len(set(Path(tempfile.gettempdir()).glob("biencoder-twin-*")) - before) == 1
        np.testing.assert_allclose(twin.encode(TEXTS), encoder.encode(TEXTS), atol=CROSS_RUNTIME_ATOL)
    assert set(Path(tempfile.gettempdir()).glob("biencoder-twin-*")) == before  # removed
    with pytest.raises(ValueError, match="unknown precision"), onnx_twin(encoder, "fp8"):
        pass


@pytest.mark.slow
def test_training_with_onnx_evaluation_gives_the_torch_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from biencoder.evaluation.sts import StsEvaluator
    from biencoder.training import TrainConfig, train
    from tests.training.helpers import write_pairs

    sts = StsEvaluator(
        name="sts",
        sentences1=TEXTS[:-1],
        sentences2=TEXTS[1:],
        scores=[float(i % 5) for i in range(len(TEXTS) - 1)],
    )
    data = str(write_pairs(tmp_path / "pairs.jsonl", 24))
    rows = {}
    for backend in ("torch", "onnx"):
        config = TrainConfig(
            data=(data,),
            output_dir=str(tmp_path / backend),
            base_model=str(tiny_model_dir),
            batch_size=8,
            epochs=1,
            max_seq_length=24,
            eval_backend=backend,
            device="cpu",
        )
        rows[backend] = train(config, evaluators=[sts], show_progress=False).eval_history[-1]
    # Training is the same in both runs (only the evaluator's runtime differs). The metric moves
    # only as far as the cosines move between the runtimes: Pearson by at most
    # 2 * max|cos_onnx - cos_torch| / std(cos) (tests/numerics.py), and those cosines are held to
    # the contract's bound. Spearman is a function of the ranks: equal unless two pairs' cosines
    # lie within twice that difference of each other.
    from biencoder.runtime.graphs import onnx_twin

    trained = SentenceEncoder.load(tmp_path / "torch", device="cpu")
    cos_torch = (trained.encode(sts.sentences1) * trained.encode(sts.sentences2)).sum(axis=1)
    with onnx_twin(trained) as twin:
        cos_onnx = (twin.encode(list(sts.sentences1)) * twin.encode(list(sts.sentences2))).sum(axis=1)
    moved = float(np.abs(cos_onnx - cos_torch).max())
    assert moved <= cosine_atol(CROSS_RUNTIME_ATOL, trained.dimension)
    bound = pearson_atol(moved, cos_torch) + 1e-12  # + float64 rounding of the metric itself
    assert rows["onnx"]["sts_pearson"] == pytest.approx(rows["torch"]["sts_pearson"], abs=bound)
    gaps = np.abs(cos_torch[:, None] - cos_torch[None, :])[np.triu_indices(len(cos_torch), 1)]
    if gaps.min() > 2 * moved:
        assert rows["onnx"]["sts_spearman"] == pytest.approx(rows["torch"]["sts_spearman"], abs=1e-12)
    assert rows["onnx"].keys() == rows["torch"].keys()
