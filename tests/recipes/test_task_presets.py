"""Every GenPO task preset trains offline: ``recipes/genpo_isaaclab.py task=<preset>`` with 64 CPU envs for two
iterations on the stand-ins, every metric it logs to MLflow finite.

One recipe process per preset (Isaac Lab allows one simulation per process), as a user runs it; Warp's kernel
cache is shared, so each run costs its start-up, the env creation and two iterations (about a minute on 2 cores).
Whether a preset *learns* is measured by ``benchmarks/learning.py --task presets`` (docs/tasks.md), not here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from recipe_runs import REPO, train_recipe

# The ten GenPO benchmark presets (docs/tasks.md); cartpole, the main job, has its own file.
PRESETS = (
    "ant", "humanoid", "anymal_d_flat", "h1", "go2", "shadow_hand", "quadcopter", "franka_reach", "franka_lift",
    "franka_open_drawer",
)  # fmt: skip
NUM_ENVS = 64
ITERATIONS = 2
# Logged by every PPO-family update whatever the task (an episode may not end within two iterations).
ALWAYS_LOGGED = ("loss_objective", "loss_critic", "kl_approx", "entropy", "explained_variance", "frames")


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_genpo_trains_on_every_preset_with_finite_metrics(preset, tmp_path):
    preset_config = OmegaConf.load(REPO / "recipes" / "config" / "task" / f"{preset}.yaml")
    frames = ITERATIONS * NUM_ENVS * int(preset_config.collector.steps_per_env)
    run_dir: Path = tmp_path / preset
    client, run_id = train_recipe(
        "genpo_isaaclab.py",
        run_dir,
        f"task={preset}",
        f"env.num_envs={NUM_ENVS}",
        "env.device=cpu",
        f"collector.total_frames={frames}",
    )
    run = client.get_run(run_id)
    assert run.data.params["env.task"] == preset_config.env.task
    assert run.data.tags["assets"] == "offline"
    metrics = run.data.metrics
    assert set(ALWAYS_LOGGED) <= set(metrics), sorted(set(ALWAYS_LOGGED) - set(metrics))
    assert metrics["frames"] == frames
    not_finite = {key: value for key, value in metrics.items() if not math.isfinite(value)}
    assert not not_finite, not_finite
    assert (run_dir / "policy.pt").is_file()
