"""The output folder of a run: the model card in the reference card's layout, its numbers, the loss plot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from biencoder.encoder import SentenceEncoder
from biencoder.training import TrainConfig, TrainResult, train
from tests.tiny import WORDS

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "spec" / "model-card.md"
N_ROWS = 1010  # more than the 1,000 rows the statistics cover: the last ones are longer than any before


class FakeEvaluator:
    """A tiny evaluator: cosine of two fixed texts, so its value changes as the model trains."""

    name = "fake"
    primary_metric = "cosine"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, encoder: Any) -> dict[str, float]:
        self.calls += 1
        a, b = encoder.encode(["what is a cat", "the dog is big"], normalize=True)
        return {"cosine": float(a @ b), "calls": float(self.calls)}


def _write_rows(path: Path) -> Path:
    rows = []
    for i in range(N_ROWS):
        n = 2 + i % 6 if i < 1000 else 20
        rows.append(
            {
                "query": " ".join(WORDS[(i + 3 * k) % len(WORDS)] for k in range(n)),
                "passage": " ".join(WORDS[(2 * i + k) % len(WORDS)] for k in range(n + 2)),
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, TrainResult]:
    tmp = tmp_path_factory.mktemp("card")
    config = TrainConfig(
        data=(str(_write_rows(tmp / "pairs.jsonl")),),
        output_dir=str(tmp / "out"),
        base_model=str(tiny_model_dir),
        batch_size=16,
        max_steps=7,
        logging_steps=2,
        eval_steps=3,
        max_seq_length=24,
        device="cpu",
    )
    return config, train(config, evaluators=[FakeEvaluator()], show_progress=False)


def _headings(text: str) -> list[str]:
    """Markdown headings outside code fences (commented-out sections included, as in the reference)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            out.append(line.strip())
    return out


def _card(config: TrainConfig) -> str:
    return (Path(config.output_dir) / "README.md").read_text(encoding="utf-8")


def test_card_has_the_reference_sections_in_order(run: tuple[TrainConfig, TrainResult]) -> None:
    if not SPEC.is_file():
        pytest.skip(f"the reference card is not at {SPEC}")
    config, _ = run
    ours = _headings(_card(config))
    expected = []
    for heading in _headings(SPEC.read_text(encoding="utf-8")):
        if heading.startswith("# SentenceTransformer based on"):
            heading = f"# SentenceTransformer based on {config.base_model}"
        elif heading == "#### Unnamed Dataset":
            heading = "#### pairs"
        expected.append(heading)
    positions = [ours.index(h) if h in ours else -1 for h in expected]
    assert -1 not in positions, [h for h, p in zip(expected, positions, strict=True) if p < 0]
    assert positions == sorted(positions), "the sections are out of the reference's order"
    assert "## Evaluation" in ours and "#### fake" in ours  # the evaluator gets its section
    evaluation = _card(config).split("#### fake\n", 1)[1].split("\n#", 1)[0]
    assert re.search(r"\| \*\*cosine\*\* +\| \*\*0\.\d{4}\*\* +\|", evaluation) and "| calls " in evaluation


def test_front_matter(run: tuple[TrainConfig, TrainResult]) -> None:
    yaml = pytest.importorskip("yaml")
    config, _ = run
    text = _card(config)
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert f"dataset_size:{N_ROWS}" in meta["tags"] and "loss:MultipleNegativesRankingLoss" in meta["tags"]
    assert meta["base_model"] == config.base_model
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert meta["library_name"] == "sentence-transformers"
    rows = [json.loads(line) for line in Path(config.data[0]).read_text().splitlines()]
    queries, passages = {r["query"] for r in rows}, {r["passage"] for r in rows}
    assert meta["widget"] and all(w["source_sentence"] in queries for w in meta["widget"])
    assert all(s in passages for w in meta["widget"] for s in w["sentences"])


def test_dataset_statistics_are_token_counts(
    run: tuple[TrainConfig, TrainResult], tiny_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    config, _ = run
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = [json.loads(line) for line in Path(config.data[0]).read_text().splitlines()][:1000]
    expected = []
    for column in ("query", "passage"):
        counts = np.array(
            [
                len(tokenizer(r[column], truncation=True, max_length=config.max_seq_length)["input_ids"])
                for r in rows
            ]
        )
        expected.append(
            f"<ul><li>min: {counts.min()} tokens</li><li>mean: {counts.mean():.2f} tokens</li>"
            f"<li>max: {counts.max()} tokens</li></ul>"
        )
    details = next(line for line in _card(config).splitlines() if line.strip().startswith("| details"))
    cells = [c.strip() for c in details.strip().strip("|").split("|")]
    assert cells[1:] == expected
    assert "* Size: 1,010 training samples" in _card(config)


def _table(text: str, heading: str) -> list[list[str]]:
    lines = text.split(f"{heading}\n", 1)[1].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_training_logs_table_equals_the_log_history(run: tuple[TrainConfig, TrainResult]) -> None:
    config, result = run
    header_line = _card(config).split("### Training Logs\n", 1)[1].splitlines()[0]
    header = [c.strip() for c in header_line.strip("|").split("|")]
    rule = _card(config).split("### Training Logs\n", 1)[1].splitlines()[1]
    assert re.fullmatch(r"\|(:-+:\|)+", rule) and len(rule) == len(header_line)  # centred, as the reference
    assert header == ["Epoch", "Step", "Training Loss", "fake_cosine"]  # the primary metric, as the reference
    by_step: dict[int, dict[str, float]] = {}
    for row in [*result.log_history, *result.eval_history]:
        by_step.setdefault(int(row["step"]), {}).update(row)
    table = _table(_card(config), "### Training Logs")
    assert [int(r[1]) for r in table] == sorted(by_step) == [2, 3, 4, 6, 7]
    for cells in table:
        row = by_step[int(cells[1])]
        assert float(cells[0]) == pytest.approx(row["epoch"], abs=1e-4)
        assert cells[2] == (f"{row['loss']:g}" if "loss" in row else "-")
        assert cells[3] == (f"{row['fake_cosine']:.4f}" if "fake_cosine" in row else "-")
    # logged losses are the means of the per-step losses of each interval
    for row in result.log_history:
        step = int(row["step"])
        assert row["loss"] == pytest.approx(np.mean(result.step_losses[step - 2 : step]), abs=1e-4)
    # the last evaluation is of the final model
    final = SentenceEncoder.load(config.output_dir, device="cpu")
    assert result.eval_history[-1]["fake_cosine"] == pytest.approx(FakeEvaluator()(final)["cosine"], abs=1e-5)


def test_loss_plot_exists_and_is_linked(run: tuple[TrainConfig, TrainResult]) -> None:
    import matplotlib.image

    config, _ = run
    png = Path(config.output_dir) / "training_loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(png).shape
    assert height > 100 and width > 100
    assert "![Training loss](training_loss.png)" in _card(config)
