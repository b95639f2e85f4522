"""Small shared helpers for the training tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.tiny import WORDS


def write_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` distinct (anchor, positive) rows made of the tiny model's vocabulary."""
    rows = []
    for i in range(n):
        a = " ".join(WORDS[(i * 7 + k * (seed + 3)) % len(WORDS)] for k in range(2 + i % 5))
        p = " ".join(WORDS[(i * 5 + k * (seed + 2)) % len(WORDS)] for k in range(3 + i % 7))
        rows.append({"anchor": f"{a} {i}", "positive": f"{p} {i}"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def without_dropout(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dst / "config.json").write_text(json.dumps(config))
    return dst
