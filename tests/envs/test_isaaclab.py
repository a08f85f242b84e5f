"""Isaac Lab envs as TorchRL envs (diffrl.envs.isaaclab) and their offline assets (diffrl.envs.offline_assets).

The simulator tests share envs through ``tests/conftest.py``; they are ordered Ant, short-episode
Cartpole, then default Cartpole so that the cache ends on the Cartpole env other test files reuse.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from diffrl.envs.isaaclab import IsaacLabAssets, make_isaaclab_env
from diffrl.envs.offline_assets import OFFLINE_TASKS, build_offline_assets, is_offline_root, main

pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed")

NUM_ENVS = 16
CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "config"


def _joint_names(usd_file: str) -> list[str]:
    from pxr import Usd, UsdPhysics

    stage = Usd.Stage.Open(usd_file)
    assert stage.GetDefaultPrim().IsValid(), f"{usd_file} has no valid default prim (Isaac Lab references it)"
    return [prim.GetName() for prim in stage.Traverse() if prim.IsA(UsdPhysics.Joint)]


def test_offline_asset_root_is_built_from_scratch(tmp_path):
    root = build_offline_assets(tmp_path / "assets")
    assert is_offline_root(root)
    files = {asset.path for assets in OFFLINE_TASKS.values() for asset in assets}
    assert all((root / path).is_file() for path in files)
    # The joint names the Isaac-Cartpole and Isaac-Ant configs address.
    cartpole = _joint_names(str(root / "Isaac/IsaacLab/Robots/Classic/Cartpole/cartpole.usd"))
    assert {"slider_to_cart", "cart_to_pole"} <= set(cartpole)
    ant = _joint_names(str(root / "Isaac/Robots/IsaacSim/Ant/ant_instanceable.usd"))
    assert {f"{leg}_{part}" for leg in ("front_left", "front_right") for part in ("leg", "foot")} <= set(ant)

    # A current root is reused as it is; a damaged one is rebuilt.
    ground = root / "Isaac/IsaacLab/Environments/Grid/default_ground_plane_checker_v1/default_ground_plane.usda"
    built_at = ground.stat().st_mtime_ns
    assert build_offline_assets(root) == root and ground.stat().st_mtime_ns == built_at
    ground.unlink()
    main(["--root", str(root)])
    assert ground.is_file()


def test_offline_builder_never_replaces_a_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("not an asset root")
    with pytest.raises(FileExistsError):
        build_offline_assets(tmp_path)
    assert (tmp_path / "mine.txt").is_file()


def test_unknown_task_raises_listing_available_tasks():
    with pytest.raises(ValueError, match="unknown Isaac Lab task 'Isaac-Nope'") as error:
        make_isaaclab_env("Isaac-Nope", 4, assets="offline")
    assert "Isaac-Cartpole" in str(error.value) and "Isaac-Ant" in str(error.value)


def test_offline_assets_for_task_without_stand_in_raises_naming_tasks_with_one():
    with pytest.raises(ValueError, match="'Isaac-Reorient-Cube-Allegro' has no offline stand-in") as error:
        make_isaaclab_env("Isaac-Reorient-Cube-Allegro", 4, assets="offline")
    assert all(task in str(error.value) for task in OFFLINE_TASKS)


def _check_contract(env, obs_dim: int, action_dim: int) -> None:
    check_env_specs(env)
    assert env.batch_size == torch.Size([NUM_ENVS])
    assert env.isaaclab_assets == IsaacLabAssets(source="offline", root=str(build_offline_assets()))
    with torch.no_grad():
        rollout = env.rollout(20, break_when_any_done=False)
    assert rollout.batch_size == torch.Size([NUM_ENVS, 20])
    expected = {
        "observation": ((obs_dim,), torch.float32),
        "action": ((action_dim,), torch.float32),
        ("next", "observation"): ((obs_dim,), torch.float32),
        ("next", "reward"): ((1,), torch.float32),
        ("next", "done"): ((1,), torch.bool),
        ("next", "terminated"): ((1,), torch.bool),
        ("next", "truncated"): ((1,), torch.bool),
    }
    for key, (shape, dtype) in expected.items():
        assert rollout[key].shape == (NUM_ENVS, 20, *shape), key
        assert rollout[key].dtype == dtype, key
    assert "policy" not in rollout.keys(include_nested=True)
    for key in ("observation", ("next", "observation"), ("next", "reward")):
        assert torch.isfinite(rollout[key]).all(), key
    assert rollout["next", "observation"].std() > 0


@pytest.mark.slow
def test_ant_passes_env_specs_and_steps_finite(isaaclab_env):
    _check_contract(isaaclab_env("Isaac-Ant", NUM_ENVS), obs_dim=60, action_dim=8)


@pytest.mark.slow
def test_truncated_step_keeps_true_final_observation(isaaclab_env, monkeypatch):
    # 0.13 s at Cartpole's step_dt = 2 x 1/120 s: episodes time out after ceil(7.8) = 8 steps.
    env = isaaclab_env("Isaac-Cartpole", NUM_ENVS, episode_length_s=0.13)
    task = env.base_env.unwrapped
    horizon = task.max_episode_length
    assert horizon == 8
    robot = task.scene["robot"]

    def joint_state() -> torch.Tensor:
        # What Cartpole observes (joint_pos_rel, joint_vel_rel), read from the articulation itself.
        data = robot.data
        pos = data.joint_pos.torch - data.default_joint_pos.torch
        vel = data.joint_vel.torch - data.default_joint_vel.torch
        return torch.cat([pos, vel], dim=-1).clone()

    start = env.reset()
    resets: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    reset_idx = task._reset_idx

    def spy(env_ids):
        before = joint_state()
        reset_idx(env_ids)
        resets.append((torch.as_tensor(env_ids).long().clone(), before, joint_state()))

    monkeypatch.setattr(task, "_reset_idx", spy)

    def zero_action(td: TensorDict) -> TensorDict:
        # No push: the cart stays in bounds, so every episode ends by time-out, all at the same step.
        return td.set("action", torch.zeros(NUM_ENVS, 1))

    with torch.no_grad():
        rollout = env.rollout(
            horizon + 2, policy=zero_action, break_when_any_done=False, auto_reset=False, tensordict=start
        )

    done = rollout["next", "done"].squeeze(-1)
    assert not done[:, : horizon - 1].any()
    assert rollout["next", "truncated"][:, horizon - 1].all()
    assert not rollout["next", "terminated"][:, horizon - 1].any()
    assert len(resets) == 1 and torch.equal(resets[0][0].sort().values, torch.arange(NUM_ENVS))
    _, before_reset, after_reset = resets[0]

    final = rollout["next", "observation"][:, horizon - 1]
    following = rollout["observation"][:, horizon]
    assert torch.isfinite(final).all()
    # The "next" observation of the truncated step is the articulation's state before the reset ...
    torch.testing.assert_close(final, before_reset)
    # ... and the next root observation the state after it (the reset draws new joint offsets).
    torch.testing.assert_close(following, after_reset)
    assert (final - following).abs().amax(dim=-1).gt(1e-3).all()

    # Independent of the articulation: the final state continues the previous step's under the
    # dynamics. Positions advance by about step_dt x the mean velocity (two semi-implicit substeps of
    # 1/120 s; the O(dt^2 x acceleration) difference stays well below 0.02 rad), while a reset
    # would jump by the reset ranges (up to 1 m and pi/4 rad).
    previous = rollout["next", "observation"][:, horizon - 2]
    step_dt = task.step_dt
    assert math.isclose(step_dt, 1 / 60)
    torch.testing.assert_close(
        final[:, :2] - previous[:, :2], step_dt * (final[:, 2:] + previous[:, 2:]) / 2, atol=0.02, rtol=0
    )


@pytest.mark.slow
def test_recipe_env_config_sets_the_episode_time_out(isaaclab_env):
    from omegaconf import OmegaConf

    from diffrl.envs import make_env

    isaaclab_env.close()  # Isaac Lab allows one open env per process
    cfg = OmegaConf.load(CONFIG_DIR / "env" / "isaaclab.yaml")
    assert cfg.episode_length_s is None, "the default keeps the task's time-out"
    env = make_env(OmegaConf.merge(cfg, {"num_envs": 2, "assets": "offline", "episode_length_s": 0.13}), seed=0)
    try:
        assert env.base_env.unwrapped.max_episode_length == 8  # ceil(0.13 s / (2 x 1/120 s))
    finally:
        env.close()


@pytest.mark.slow
def test_cartpole_passes_env_specs_and_steps_finite(cartpole_env):
    _check_contract(cartpole_env, obs_dim=4, action_dim=1)


@pytest.mark.slow
def test_collector_collects_cartpole_batches(cartpole_env):
    from torchrl.collectors import Collector

    # TorchRL 0.14.1 closes the env once total_frames are collected (and on shutdown() unless
    # close_env=False): this env is shared, so run open-ended and stop by hand.
    collector = Collector(
        cartpole_env,
        policy=None,  # random actions from the action spec
        frames_per_batch=NUM_ENVS * 8,
        total_frames=-1,
        auto_register_policy_transforms=False,
    )
    batches = list(itertools.islice(collector, 2))
    collector.shutdown(close_env=False)
    assert len(batches) == 2
    for batch in batches:
        assert batch.batch_size == torch.Size([NUM_ENVS, 8])
        assert torch.isfinite(batch["next", "observation"]).all()
        assert torch.isfinite(batch["next", "reward"]).all()
    assert not cartpole_env.is_closed


@pytest.mark.slow
def test_second_env_while_one_is_open_raises(cartpole_env):
    with pytest.raises(RuntimeError, match=r"env\.close\(\)"):
        make_isaaclab_env("Isaac-Ant", 4, assets="offline")
    assert not cartpole_env.is_closed
