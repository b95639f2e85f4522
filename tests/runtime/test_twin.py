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
    # Training is the same in both runs (only the evaluator's runtime differs); the two
    # runtimes' embeddings agree to CROSS_RUNTIME_ATOL, which moves each cosine by at most
    # cosine_atol and Pearson by at most 2 * that / std(scores). Spearman is a function of the
    # ranks: equal unless two pairs' cosines lie within the score tolerance of each other.
    trained = SentenceEncoder.load(tmp_path / "torch", device="cpu")
    a, b = trained.encode(sts.sentences1), trained.encode(sts.sentences2)
    cosines = (a * b).sum(axis=1)
    score_atol = cosine_atol(CROSS_RUNTIME_ATOL, trained.dimension)
    assert rows["onnx"]["sts_pearson"] == pytest.approx(
        rows["torch"]["sts_pearson"], abs=pearson_atol(score_atol, cosines)
    )
    gaps = np.abs(cosines[:, None] - cosines[None, :])[np.triu_indices(len(cosines), 1)]
    if gaps.min() > 2 * score_atol:
        assert rows["onnx"]["sts_spearman"] == pytest.approx(rows["torch"]["sts_spearman"], abs=1e-12)
    assert rows["onnx"].keys() == rows["torch"].keys()
