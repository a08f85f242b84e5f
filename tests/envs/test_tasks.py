"""Every GenPO benchmark task with an offline stand-in: created on CPU, TorchRL's env checks, finite steps.

One env per task, made through the session cache of ``tests/conftest.py`` (Isaac Lab allows one
simulation per process; each creation after the first takes seconds). The recipe presets of
``recipes/config/task`` are checked with Hydra's compose API, without a simulator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from diffrl.envs.offline_assets import OFFLINE_TASKS, stand_in_notes

NUM_ENVS = 4
STEPS = 8
CONFIG_DIR = Path(__file__).parents[2] / "recipes" / "config"

# Preset -> (task id, a config change the record must name or None, obs dim, action dim): the
# dims are the tasks' own (the stand-ins have the same joints).
TASKS = {
    "cartpole": ("Isaac-Cartpole", None, 4, 1),
    "ant": ("Isaac-Ant", None, 60, 8),
    "humanoid": ("Isaac-Humanoid", None, 87, 21),
    "anymal_d_flat": ("Isaac-Velocity-Flat-AnymalD", "ANYDRIVE_3_SIMPLE_ACTUATOR_CFG", 48, 12),
    "h1": ("Isaac-Velocity-Flat-H1", None, 69, 19),
    "go2": ("Isaac-Velocity-Flat-UnitreeGo2", None, 48, 12),
    "franka_reach": ("Isaac-Reach-Franka", "panda_finger2_passive", 32, 7),
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(TASKS))
def test_task_runs_offline_and_steps_finite(isaaclab_env, preset):
    task, change, obs_dim, action_dim = TASKS[preset]
    env = isaaclab_env(task, NUM_ENVS)
    check_env_specs(env)
    record = env.isaaclab_assets
    assert record.source == "offline"
    # The stand-ins are named, robot first, and every config change is on record.
    assert record.stand_ins == stand_in_notes(task) and record.stand_ins
    if change is None:
        assert record.config_changes == ()
    else:
        assert any(change in line for line in record.config_changes), record.config_changes
    with torch.no_grad():
        rollout = env.rollout(STEPS, break_when_any_done=False)
    assert rollout["observation"].shape == (NUM_ENVS, STEPS, obs_dim)
    assert rollout["action"].shape == (NUM_ENVS, STEPS, action_dim)
    for key in ("observation", ("next", "observation"), ("next", "reward")):
        assert torch.isfinite(rollout[key]).all(), key


# Preset -> (task id, steps per env, epochs, minibatches, learning rate, widths, normalization): the
# reference rsl_rl settings of isaaclab_tasks (agents/rsl_rl_ppo_cfg.py of each task).
REFERENCE = {
    "cartpole": ("Isaac-Cartpole", 16, 5, 4, 1e-3, [64, 64], False),
    "ant": ("Isaac-Ant", 32, 5, 4, 5e-4, [400, 200, 100], None),
    "humanoid": ("Isaac-Humanoid", 32, 5, 4, 5e-4, [400, 200, 100], True),
    "anymal_d_flat": ("Isaac-Velocity-Flat-AnymalD", 24, 5, 4, 1e-3, [128, 128, 128], False),
    "anymal_d_rough": ("Isaac-Velocity-Rough-AnymalD", 24, 5, 4, 1e-3, [512, 256, 128], False),
    "h1": ("Isaac-Velocity-Flat-H1", 24, 5, 4, 1e-3, [128, 128, 128], False),
    "go2": ("Isaac-Velocity-Flat-UnitreeGo2", 24, 5, 4, 1e-3, [128, 128, 128], False),
    "franka_reach": ("Isaac-Reach-Franka", 24, 8, 4, 1e-3, [64, 64], False),
    "shadow_hand": ("Isaac-Reorient-Cube-Shadow", 16, 5, 4, 5e-4, [512, 512, 256, 128], True),
}
RECIPES = ("genpo_isaaclab", "trudi_isaaclab", "ppo_isaaclab")


def _compose(recipe: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=recipe, overrides=overrides)


def test_every_isaaclab_task_preset_is_checked_here():
    presets = {path.stem for path in (CONFIG_DIR / "task").glob("*.yaml")}
    assert presets - {"halfcheetah"} == set(REFERENCE)
    # Every offline-covered GenPO task has a preset that the env test above creates.
    assert {REFERENCE[p][0] for p in TASKS} <= set(OFFLINE_TASKS)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("preset", list(REFERENCE))
def test_task_preset_composes_with_reference_settings(recipe, preset):
    task, steps, epochs, minibatches, lr, widths, normalize = REFERENCE[preset]
    cfg = _compose(recipe, [f"task={preset}", "env.num_envs=64", "env.device=cpu"])
    assert cfg.env.backend == "isaaclab" and cfg.env.task == task and cfg.env.num_envs == 64
    assert cfg.collector.steps_per_env == steps
    trainer = cfg.algorithm.trainer
    assert (trainer.num_epochs, trainer.num_minibatches, trainer.learning_rate) == (epochs, minibatches, lr)
    assert list(cfg.algorithm.hidden_sizes) == widths and list(cfg.algorithm.critic_hidden_sizes) == widths
    if normalize is not None:  # the Ant preset keeps each algorithm's own default
        assert trainer.normalize_observations is normalize
    assert cfg.algorithm.name == recipe.removesuffix("_isaaclab")


def test_unknown_task_preset_is_rejected_listing_the_presets():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as error:
        _compose("genpo_isaaclab", ["task=anymal"])
    assert "anymal_d_flat" in str(error.value) and "franka_reach" in str(error.value)
