"""gymnasium MuJoCo tasks (Ant-v5, HalfCheetah-v5, Humanoid-v5, ...) as batched TorchRL envs.

The copies run in one process, one after another (gymnasium's ``SyncVectorEnv``): a
MuJoCo step is too cheap for subprocess workers (TorchRL's ``GymEnv(num_envs=...)``) to
pay off on a few CPU cores. gymnasium's auto-reset is disabled, so TorchRL owns resets:
the ``("next", "observation")`` of a done step is the true final observation (needed to
bootstrap values at time-outs), and the partial reset that TorchRL's
``step_and_maybe_reset`` (and hence ``Collector``) issues resets only the finished copies.

Shapes, with B the number of parallel envs and d the action dimension:
``"observation"`` float32 [B, obs_dim], ``"action"`` [B, d], ``"reward"`` [B, 1],
``"done"`` / ``"terminated"`` / ``"truncated"`` bool [B, 1].

Example:
    >>> env = make_gym_env("HalfCheetah-v5", num_envs=2, seed=0)
    >>> td = env.rollout(3, break_when_any_done=False)
    >>> td["next", "observation"].shape, td["next", "observation"].dtype
    (torch.Size([2, 3, 17]), torch.float32)
"""

from __future__ import annotations

import logging

import gymnasium as gym
from gymnasium.vector import AutoresetMode
from torchrl.envs import DoubleToFloat, EnvBase, GymWrapper, TransformedEnv

__all__ = ["make_gym_env", "mujoco_env_ids"]

logger = logging.getLogger(__name__)


def mujoco_env_ids() -> list[str]:
    """The gymnasium MuJoCo task ids registered in this installation (``"Ant-v5"``, ...)."""
    return sorted(
        env_id
        for env_id, spec in gym.registry.items()
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.mujoco")
    )


def make_gym_env(
    env_id: str,
    num_envs: int,
    device: str = "cpu",
    seed: int = 0,
    max_episode_steps: int | None = None,
) -> EnvBase:
    """Build ``num_envs`` synchronous copies of a gymnasium task as one batched TorchRL env.

    Args:
        env_id: a registered gymnasium id with a flat Box observation and a Box action
            space, in practice a MuJoCo task such as ``"Ant-v5"``.
        num_envs: B, the number of parallel copies; the env's batch size is [B].
        device: where the TorchRL tensors live (the simulation itself runs on CPU).
        seed: copy i is reset with seed ``seed + i`` once, then continues its own
            random stream, so a run is reproducible and copies differ.
        max_episode_steps: time limit per episode (a truncation); ``None`` keeps the
            task's registered limit (1000 for the MuJoCo locomotion tasks).

    Returns:
        A TorchRL env with float32 observations; see the module docstring for the keys.

    Raises:
        ValueError: unknown ``env_id``, ``num_envs < 1``, or spaces that are not flat Boxes.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise ValueError(
            f"Unknown gymnasium env id {env_id!r} ({err}). Valid MuJoCo ids: {', '.join(mujoco_env_ids())}"
        ) from err

    vec_env = gym.make_vec(
        env_id,
        num_envs,
        vectorization_mode="sync",
        # With auto-reset on, gymnasium returns the reset observation of a done step (the
        # final one only in infos); disabled, TorchRL's masked reset
        # (options={"reset_mask": ...}) resets the finished copies after the step.
        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
        max_episode_steps=max_episode_steps,
    )
    for name, space in (("observation", vec_env.single_observation_space), ("action", vec_env.single_action_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            vec_env.close()
            raise ValueError(f"{env_id}: the {name} space must be a flat Box, got {space}")

    # DoubleToFloat: MuJoCo observations are float64, the policies are float32.
    env = TransformedEnv(GymWrapper(vec_env, device=device), DoubleToFloat())
    # gymnasium's vector reset(seed=s) seeds copy i with s + i.
    env.set_seed(seed)
    logger.info("gymnasium %s: %d sync copies on %s, seed %d", env_id, num_envs, device, seed)
    return env
