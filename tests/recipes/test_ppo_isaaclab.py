"""The Gaussian PPO baseline end to end: recipes/ppo_isaaclab.py on Isaac-Cartpole (CPU, offline assets).

The recipe runs in its own process, as a user runs it (Isaac Lab allows one simulation per process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "ppo_isaaclab.py"
FRAMES_PER_ITERATION = 256 * 16  # ppo_isaaclab.yaml: 256 envs x 16 steps
ITERATIONS = 40


@pytest.mark.slow
def test_ppo_learns_isaac_cartpole(tmp_path):
    command = [
        sys.executable,
        str(RECIPE),
        f"hydra.run.dir={tmp_path}",
        "logger.progress=false",
        "env.assets=offline",
        f"collector.total_frames={ITERATIONS * FRAMES_PER_ITERATION}",
        "checkpoint.every=100",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]

    info = json.loads((tmp_path / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    run = client.get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.name"] == "ppo"
    assert run.data.tags["assets"] == "offline"
    history = sorted((m.step, m.value) for m in client.get_metric_history(info["mlflow_run_id"], "episode_return"))
    assert [step for step, _ in history][-1] == ITERATIONS
    returns = [value for _, value in history]
    first, last = returns[:5], returns[-5:]
    # A random policy scores about -2 on Cartpole, balancing 300 steps about 4.9: the last
    # iterations must be clearly above the first ones (more than 1.5 return units).
    assert sum(last) / len(last) > sum(first) / len(first) + 1.5, returns
    for key in ("loss_objective", "loss_critic", "loss_entropy", "kl_approx", "entropy", "clip_fraction"):
        assert key in run.data.metrics, key
