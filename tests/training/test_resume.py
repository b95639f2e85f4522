"""kill -9 at a random moment, resume: the final weights equal an uninterrupted run's, bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biencoder.encoder import SentenceEncoder
from biencoder.training.checkpoint import STATE_FILE, list_checkpoints, load_checkpoint
from tests.training.helpers import write_pairs

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys
from biencoder.training import TrainConfig, train
config = TrainConfig(data=(sys.argv[1],), output_dir=sys.argv[2], base_model=sys.argv[3], batch_size=4,
                     epochs=2, logging_steps=3, save_steps=1, save_total_limit=3, max_seq_length=24,
                     device="cpu")
train(config, resume=sys.argv[4] == "resume", show_progress=False)
"""


def _run(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]


def _assert_complete(folder: Path) -> None:
    """Every checkpoint that is visible loads completely."""
    for path in list_checkpoints(folder):
        payload = load_checkpoint(path)
        assert payload["step"] == int(path.name.split("-")[1])
        SentenceEncoder.load(path / "model", device="cpu")
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []
    assert all((p / STATE_FILE).is_file() for p in visible), visible


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = str(write_pairs(tmp_path / "pairs.jsonl", 48))  # 12 steps an epoch, 24 in all
    _finish(_run([data, str(tmp_path / "straight"), str(tiny_model_dir), "fresh"]))

    out = tmp_path / "killed"
    rng = random.Random()
    kill_after = rng.randint(2, 20)
    proc = _run([data, str(out), str(tiny_model_dir), "fresh"])
    deadline = time.time() + 120
    while not (out / "checkpoints" / f"checkpoint-{kill_after}").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))  # land anywhere in the next step or save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _assert_complete(out / "checkpoints")
    survivors = list_checkpoints(out / "checkpoints")
    assert survivors and int(survivors[-1].name.split("-")[1]) < 24

    _finish(_run([data, str(out), str(tiny_model_dir), "resume"]))
    expected = load_file(tmp_path / "straight" / "model.safetensors")
    got = load_file(out / "model.safetensors")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), (
            f"{name} differs after resuming (killed after step {kill_after})"
        )
    straight_log = load_checkpoint(list_checkpoints(tmp_path / "straight" / "checkpoints")[-1])
    resumed_log = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert straight_log["train_state"]["log_history"] == resumed_log["train_state"]["log_history"]
