"""DPPO end to end: recipes/dppo_isaaclab.py learns Isaac-Cartpole (CPU, offline assets), per-step clips logged."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
FRAMES_PER_ITERATION = 256 * 16  # the Cartpole preset: 256 envs x 16 steps


@pytest.mark.slow
def test_dppo_learns_isaac_cartpole_and_reports_per_step_clip_fractions(tmp_path):
    run_dir = tmp_path / "dppo_cartpole"
    command = [
        sys.executable,
        str(REPO / "recipes" / "dppo_isaaclab.py"),
        f"hydra.run.dir={run_dir}",
        "logger.progress=false",
        "env.assets=offline",
        f"collector.total_frames={40 * FRAMES_PER_ITERATION}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    returns = [
        metric.value
        for metric in sorted(client.get_metric_history(info["mlflow_run_id"], "episode_return"), key=lambda m: m.step)
    ]
    first, last = returns[:5], returns[-5:]
    # A random policy scores about -2 on Cartpole, balancing 300 steps about 4.9.
    assert sum(last) / len(last) > sum(first) / len(first) + 1.5, returns
    metrics = client.get_run(info["mlflow_run_id"]).data.metrics
    for key in ("loss_objective", "kl_approx", "step_kl_approx", "clip_fraction", "clip_fraction_1", "clip_fraction_5"):
        assert math.isfinite(metrics[key]), key
