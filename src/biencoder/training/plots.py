"""The training-loss chart linked from the model card."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from biencoder.atomic import atomic_file


def moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss(step_losses: Sequence[float], log_rows: Sequence[dict[str, float]], path: Path) -> Path:
    """Per-step loss (faint), its moving average and the logged interval means, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(1, len(step_losses) + 1))
    window = max(1, len(step_losses) // 50)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        ax.plot(steps, step_losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss per step")
        if window > 1:
            ax.plot(
                steps, moving_average(step_losses, window), color="tab:blue", label=f"mean of {window} steps"
            )
        logged = [r for r in log_rows if "loss" in r]
        if logged:
            ax.plot(
                [r["step"] for r in logged],
                [r["loss"] for r in logged],
                "o-",
                color="tab:orange",
                markersize=3,
                label="logged loss",
            )
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title("Training loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
