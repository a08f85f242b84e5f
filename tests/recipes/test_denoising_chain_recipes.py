"""The two PPO methods on TruDi-PPO's Gaussian denoising chain, end to end on Isaac-Cartpole (CPU, offline assets):
recipes/trudi_isaaclab.py algorithm=trudi_ppo (whole-chain KL projection) and recipes/dppo_isaaclab.py (per-step clips).
"""

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
METHODS = {
    "trudi_ppo": (
        ["trudi_isaaclab.py", "algorithm=trudi_ppo"],
        ("chain_kl", "chain_kl_projected", "projected_fraction", "loss_trust_region", "kl_approx"),
    ),
    "dppo": (
        ["dppo_isaaclab.py"],
        ("kl_approx", "step_kl_approx", "clip_fraction", "clip_fraction_1", "clip_fraction_5"),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_learns_isaac_cartpole_and_logs_its_trust_region_diagnostics(tmp_path, method):
    (recipe, *selection), diagnostics = METHODS[method]
    run_dir = tmp_path / method
    command = [
        sys.executable,
        str(REPO / "recipes" / recipe),
        *selection,
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
    for key in diagnostics:
        assert math.isfinite(metrics[key]), key
