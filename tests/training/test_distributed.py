"""Two gloo processes on CPU: the gathered loss, averaged gradients and trained weights equal one process."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from biencoder.encoder import SentenceEncoder
from biencoder.losses import MultipleNegativesRankingLoss
from biencoder.training import TrainConfig, train
from biencoder.training.distributed import average_gradients
from tests.training.helpers import without_dropout, write_pairs

ANCHORS = [f"what is the {w} {i}" for i, w in enumerate(["cat", "dog", "fish", "bird"] * 16)]
POSITIVES = [f"the {w} is big {i % 9}" for i, w in enumerate(["tree", "house", "car", "water"] * 16)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loss_and_grads(
    model: SentenceEncoder, rows: slice, gather: bool
) -> tuple[float, dict[str, torch.Tensor]]:
    loss_fn = MultipleNegativesRankingLoss(model, gather_across_devices=gather)
    features = [model.tokenize(ANCHORS[rows]), model.tokenize(POSITIVES[rows])]
    loss = float(loss_fn.forward_backward(features))
    return loss, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, model_dir: str, data: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = SentenceEncoder.load(model_dir, device="cpu").eval()
        loss, grads = _loss_and_grads(model, slice(rank * 32, rank * 32 + 32), gather=True)
        average_gradients([p for p in model.parameters() if p.grad is not None], 2)
        torch.save({"loss": loss, "grads": grads}, Path(out) / f"rank{rank}.pt")
        config = TrainConfig(
            data=(data,),
            output_dir=str(Path(out) / "ddp"),
            base_model=model_dir,
            batch_size=4,
            epochs=1,
            max_seq_length=24,
            device="cpu",
            save_steps=1000,
        )
        train(config, show_progress=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = str(without_dropout(tiny_model_dir, tmp_path / "model"))
    data = str(write_pairs(tmp_path / "pairs.jsonl", 32))
    mp.start_processes(
        _worker, args=(_free_port(), model_dir, data, str(tmp_path)), nprocs=2, start_method="spawn"
    )

    model = SentenceEncoder.load(model_dir, device="cpu").eval()
    loss, grads = _loss_and_grads(model, slice(0, 64), gather=False)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert abs((ranks[0]["loss"] + ranks[1]["loss"]) / 2 - loss) < 1e-6
    assert loss < math.log(64) - 0.01  # the texts embed apart: the gradients are not rounding noise
    # The averaged gradients equal one process's (attention key biases: 0 in exact maths, ~1e-11 here).
    assert grads.keys() == ranks[0]["grads"].keys() and len(grads) > 30
    for name, expected in grads.items():
        for rank in ranks:
            error = (rank["grads"][name] - expected).norm().item()
            assert error <= 1e-4 * expected.norm().item() + 1e-8, (name, error, expected.norm().item())
    # The whole trainer: 2 processes x 4 pairs a step == 1 process x 8 pairs a step (same rows, same order).
    single = TrainConfig(
        data=(data,),
        output_dir=str(tmp_path / "single"),
        base_model=model_dir,
        batch_size=8,
        epochs=1,
        max_seq_length=24,
        device="cpu",
        save_steps=1000,
    )
    train(single, show_progress=False)
    expected = load_file(tmp_path / "single" / "model.safetensors")
    got = load_file(tmp_path / "ddp" / "model.safetensors")
    for name, tensor in expected.items():
        assert torch.allclose(got[name], tensor, atol=1e-6), (name, (got[name] - tensor).abs().max().item())
