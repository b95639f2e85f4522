"""``biencoder train``: flags, a --config TOML file (flags win), and one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biencoder.cli import build_parser, main
from biencoder.cli.train import build_config
from biencoder.training import TrainConfig
from biencoder.training.checkpoint import list_checkpoints, load_checkpoint
from tests.training.helpers import write_pairs


def test_train_command_writes_model_card_and_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", 24)
    out = tmp_path / "out"
    argv = ["-q", "train", "--base", str(tiny_model_dir), "--data", str(data), "--output", str(out)]
    argv += ["--batch-size", "4", "--max-steps", "3", "--max-seq-length", "24", "--device", "cpu"]
    argv += ["--logging-steps", "1", "--lr", "1e-3"]
    assert main(argv) == 0
    assert {"README.md", "training_loss.png", "model.safetensors", "modules.json"} <= {
        p.name for p in out.iterdir()
    }
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    (last,) = list_checkpoints(out / "checkpoints")[-1:]
    payload = load_checkpoint(last)
    assert payload["step"] == 3 and payload["config"]["learning_rate"] == 1e-3
    assert [row["step"] for row in payload["train_state"]["log_history"]] == [1, 2, 3]


def test_config_toml_with_flags_overriding(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.jsonl", 24)
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[train]\ndata = ["{data}"]\noutput_dir = "{tmp_path / "out"}"\nbase_model = "{tiny_model_dir}"\n'
        "batch_size = 4\nmax_steps = 2\nepochs = 5\nlogging_steps = 1\nmax_seq_length = 24\n"
        'device = "cpu"\nwarmup_steps = 1\n'
    )
    args = build_parser().parse_args(["train", "--config", str(toml), "--max-steps", "3", "--seed", "7"])
    config = build_config(args)
    expected = TrainConfig(
        data=(str(data),),
        output_dir=str(tmp_path / "out"),
        base_model=str(tiny_model_dir),
        batch_size=4,
        max_steps=3,
        epochs=5,
        logging_steps=1,
        max_seq_length=24,
        device="cpu",
        warmup_steps=1,
        seed=7,
    )
    assert config == expected
    assert main(["-q", "train", "--config", str(toml)]) == 0
    (last,) = list_checkpoints(tmp_path / "out" / "checkpoints")[-1:]
    assert load_checkpoint(last)["step"] == 2


def test_defaults_are_the_card_recipe(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--data", "x.jsonl", "--output", str(tmp_path)])
    config = build_config(args)
    assert (config.base_model, config.batch_size, config.epochs, config.learning_rate) == (
        "sentence-transformers/all-MiniLM-L6-v2",
        64,
        3,
        5e-5,
    )
    assert (config.warmup_ratio, config.max_grad_norm, config.seed, config.scale) == (0.0, 1.0, 42, 20.0)
    assert (config.max_seq_length, config.logging_steps, config.similarity) == (256, 500, "cosine")
    assert config.unpad and config.precision == "auto"  # unpadded: the same loss and gradients, less work


def test_no_unpad_and_precision_flags(tmp_path: Path) -> None:
    argv = ["train", "--data", "x.jsonl", "--output", str(tmp_path), "--no-unpad", "--precision", "bf16"]
    config = build_config(build_parser().parse_args(argv))
    assert config.unpad is False and config.precision == "bf16"


def test_training_progress_lines_in_a_log_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Output to a file: progress comes as log lines (step / total, loss, speed, time left)."""
    data = write_pairs(tmp_path / "pairs.jsonl", 24)
    log = tmp_path / "train.log"
    argv = [sys.executable, "-m", "biencoder", "train", "--base", str(tiny_model_dir), "--data", str(data)]
    argv += [
        "--output",
        str(tmp_path / "out"),
        "--batch-size",
        "4",
        "--max-steps",
        "4",
        "--max-seq-length",
        "24",
    ]
    argv += ["--device", "cpu"]
    env = {**os.environ, "BIENCODER_PROGRESS_SECONDS": "0", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as f:
        subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, check=True, timeout=300)
    lines = [line for line in log.read_text().splitlines() if "Training: " in line]
    pattern = re.compile(
        r"Training: (\d)/4 steps \(\d+%\), loss \d+\.\d{4}, .*(s/step|steps/s), \d+:\d\d left"
    )
    steps = [int(m.group(1)) for m in map(pattern.search, lines) if m]
    assert steps == [1, 2, 3, 4], lines
    assert any("(done in" in line for line in lines)
    assert "\r" not in log.read_text()  # no bar redrawn into the file


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "x.jsonl"], "--output required"),
        (["train", "--output", "out"], "--data required"),
        (["train", "--data", "missing.jsonl", "--output", "out"], "training data not found"),
        (
            ["train", "--data", "x.jsonl", "--output", "out", "--batch-size", "0"],
            "batch_size must be positive",
        ),
    ],
)
def test_errors_are_one_line(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("biencoder train: error:") and message in err[-1]


def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('data = "x.jsonl"\noutput_dir = "out"\nbatch_sise = 8\n')
    assert main(["train", "--config", str(toml)]) == 1
    assert "unknown setting(s) ['batch_sise']" in capsys.readouterr().err
    toml.write_text("data = [\n")
    assert main(["train", "--config", str(toml)]) == 1
    assert "invalid TOML" in capsys.readouterr().err


def test_a_loss_per_dataset_from_flags_and_from_toml(tmp_path: Path) -> None:
    argv = ["train", "--data", "a.jsonl", "--data", "sts-train.csv", "--output", str(tmp_path)]
    argv += ["--data-loss", "sts-train=cosent", "--teacher", "base", "--teacher-cache", str(tmp_path / "t")]
    config = build_config(build_parser().parse_args(argv))
    assert config.dataset_losses == {"sts-train": "cosent"} and config.loss_of("a") == "mnrl"
    assert (config.teacher_model, config.teacher_cache) == ("base", str(tmp_path / "t"))
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[train]\ndata = ["a.jsonl", "q.tsv"]\noutput_dir = "{tmp_path}"\n'
        '[train.dataset_losses]\nq = "mse"\n'
    )
    args = build_parser().parse_args(["train", "--config", str(toml), "--data-loss", "a=cached_mnrl"])
    assert build_config(args).dataset_losses == {"q": "mse", "a": "cached_mnrl"}  # flags add to the file's
    with pytest.raises(ValueError, match="expected DATASET=LOSS"):
        build_config(build_parser().parse_args([*argv, "--data-loss", "cosent"]))
