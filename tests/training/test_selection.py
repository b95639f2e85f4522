"""Dev splits by query, evaluation during training, and the best checkpoint kept as the saved model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from biencoder.cli import main
from biencoder.data.beir import load_beir
from biencoder.data.splits import split_beir, split_queries
from biencoder.encoder import SentenceEncoder
from biencoder.training import TrainConfig, train
from biencoder.training.selection import metric_key
from tests.tiny import WORDS


def _beir(folder: Path, n_queries: int, split: str = "train") -> Path:
    """Queries q0.. with two relevant documents each, made of the tiny model's vocabulary."""
    (folder / "qrels").mkdir(parents=True)
    words = lambda i, k: " ".join(WORDS[(i * k + j) % len(WORDS)] for j in range(3 + i % 4))  # noqa: E731
    with (folder / "corpus.jsonl").open("w") as f:
        for i in range(2 * n_queries):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"{words(i, 5)} {i}"}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for i in range(n_queries):
            f.write(json.dumps({"_id": f"q{i}", "text": f"{words(i, 3)} {i}"}) + "\n")
    rows = [f"q{i}\td{2 * i + j}\t1" for i in range(n_queries) for j in (0, 1)]
    (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def test_split_by_query_is_a_seeded_partition(tmp_path: Path) -> None:
    source = _beir(tmp_path / "src", 30)
    split = split_beir(source, tmp_path / "split", dev_queries=7, seed=3)
    assert len(split.dev) == 7 and len(split.train) == 23
    assert set(split.train).isdisjoint(split.dev)
    assert set(split.train) | set(split.dev) == {f"q{i}" for i in range(30)}
    dev, whole = load_beir(split.folder, "dev"), load_beir(source, "train")
    assert dev.qrels == {q: whole.qrels[q] for q in split.dev}  # every judgement goes with its query
    assert set(load_beir(split.folder, "train").qrels) == set(split.train)
    assert dev.corpus == whole.corpus
    again = split_beir(source, tmp_path / "again", dev_queries=7, seed=3)
    assert again.dev == split.dev
    assert split_beir(source, tmp_path / "other", dev_queries=7, seed=4).dev != split.dev
    with pytest.raises(ValueError, match="dev_queries must be in"):
        split_queries(["a", "b"], 2, 0)
    with pytest.raises(FileNotFoundError, match="qrels"):
        split_beir(source, tmp_path / "x", split="test")
    assert not (tmp_path / "x").exists()


class Scripted:
    """An evaluator whose score follows a script, so that the best step is known in advance."""

    name = "scripted"
    primary_metric = "score"

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.calls = scores, 0

    def __call__(self, encoder: Any) -> dict[str, float]:
        self.calls += 1
        return {"score": self.scores[self.calls - 1]}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return SentenceEncoder.load(folder, device="cpu").state_dict()


@pytest.mark.slow
def test_keep_best_saves_the_best_dev_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    beir = _beir(tmp_path / "beir", 24)
    split = split_beir(beir, tmp_path / "split", dev_queries=8, seed=0)
    config = TrainConfig(
        data=(str(split.folder),),
        output_dir=str(tmp_path / "out"),
        base_model=str(tiny_model_dir),
        batch_size=8,  # 16 train queries x 2 judged documents: 32 pairs, 4 steps an epoch
        epochs=3,
        max_seq_length=24,
        save_steps=4,
        save_total_limit=None,
        eval_data=str(split.folder),
        keep_best="scripted_score",
        device="cpu",
    )
    result = train(config, evaluators=[Scripted([0.2, 0.9, 0.5])], show_progress=False)
    steps = [int(r["step"]) for r in result.eval_history]
    assert steps == [4, 8, 12]  # each epoch's end
    assert all("split-dev_ndcg@10" in r for r in result.eval_history)
    checkpoints = tmp_path / "out" / "checkpoints"
    saved = _weights(tmp_path / "out")
    best, last = (
        _weights(checkpoints / "checkpoint-8" / "model"),
        _weights(checkpoints / "checkpoint-12" / "model"),
    )
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    assert any(not torch.equal(saved[k], last[k]) for k in saved)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "* The bold row denotes the saved checkpoint." in card
    assert "| **2.0000** | **8** |" in card
    assert "`load_best_model_at_end`: True" in card and "`metric_for_best_model`: scripted_score" in card
    assert "| **score** | **0.9000** |" in card  # the evaluation section reports the saved weights


@pytest.mark.slow
def test_cli_eval_data_and_keep_best_by_a_dev_metric(tiny_model_dir: Path, tmp_path: Path) -> None:
    split = split_beir(_beir(tmp_path / "beir", 24), tmp_path / "split", dev_queries=8, seed=0)
    out = tmp_path / "out"
    argv = ["-q", "train", "--base", str(tiny_model_dir), "--data", str(split.folder), "--output", str(out)]
    flags = ["--batch-size", "8", "--epochs", "2", "--max-seq-length", "24", "--device", "cpu"]
    dev = [
        "--eval-data",
        str(split.folder),
        "--eval-extra-docs",
        "5",
        "--eval-steps",
        "3",
        "--keep-best",
        "ndcg@10",
    ]
    assert main([*argv, *flags, *dev]) == 0
    card = (out / "README.md").read_text()
    assert "split-dev_ndcg@10" in card and "* The bold row denotes the saved checkpoint." in card
    assert (out / "checkpoints" / "best" / "config.json").is_file()
    unknown = ["--eval-data", str(split.folder), "--keep-best", "nope@3"]
    assert main([*argv[:-1], str(tmp_path / "bad"), *flags, *unknown]) == 1  # the error names known metrics


def test_keep_best_needs_a_dev_set_and_a_known_metric(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_best needs eval_data"):
        TrainConfig(data=("x",), output_dir=str(tmp_path), keep_best="ndcg@10")
    with pytest.raises(ValueError, match="eval_extra_docs"):
        TrainConfig(data=("x",), output_dir=str(tmp_path), eval_extra_docs=-1)
    row = {"epoch": 1.0, "step": 4, "dev_ndcg@10": 0.5, "dev_mrr@10": 0.4}
    assert metric_key("dev_ndcg@10", row, None) == "dev_ndcg@10"
    with pytest.raises(ValueError, match="known: dev_mrr@10, dev_ndcg@10"):
        metric_key("recall@7", row, None)
    config = TrainConfig(data=("x",), output_dir=str(tmp_path), eval_data=str(tmp_path / "missing"))
    from biencoder.training.selection import dev_evaluator

    with pytest.raises(FileNotFoundError, match=r"eval_data .*missing not found"):
        dev_evaluator(config)
