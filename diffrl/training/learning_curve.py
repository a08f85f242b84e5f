"""Learning-curve figure of a run: return, KL and learning rate against env frames."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs write PNGs, they never open windows
import matplotlib.pyplot as plt

_PANELS = (
    ("episode_return", "mean episode return (last 100)"),
    ("kl_approx", "KL(π_old‖π_θ), k1"),
    ("learning_rate", "learning rate"),
)


def plot_learning_curve(history: Sequence[dict[str, float]], path: str | Path, title: str) -> Path:
    """Write a PNG with one panel per key of ``_PANELS`` over ``history[i]["frames"]``."""
    path = Path(path)
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(5 * len(_PANELS), 3.6), constrained_layout=True)
    frames = [entry["frames"] for entry in history]
    for axis, (key, label) in zip(axes, _PANELS, strict=True):
        values = [entry.get(key, math.nan) for entry in history]
        axis.plot(frames, values)
        axis.set_xlabel("env frames")
        axis.set_title(label)
        axis.grid(alpha=0.3)
    axes[2].set_yscale("log")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
