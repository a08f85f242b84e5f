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

The returned env carries ``simulator_state``, a checkpointable object (``state_dict`` /
``load_state_dict``) with every copy's full MuJoCo integration state, time-limit counter and
random generator: a resumed training run continues the very same episodes (see
:class:`diffrl.training.on_policy.OnPolicyTrainer`).

Example:
    >>> env = make_gym_env("HalfCheetah-v5", num_envs=2, seed=0)
    >>> td = env.rollout(3, break_when_any_done=False)
    >>> td["next", "observation"].shape, td["next", "observation"].dtype
    (torch.Size([2, 3, 17]), torch.float32)
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import TimeLimit
from torchrl.envs import DoubleToFloat, EnvBase, GymWrapper, TransformedEnv

__all__ = ["MujocoVectorState", "make_gym_env", "mujoco_env_ids"]

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
    env.simulator_state = MujocoVectorState(vec_env)
    logger.info("gymnasium %s: %d sync copies on %s, seed %d", env_id, num_envs, device, seed)
    return env


# Everything mj_step reads: time, qpos, qvel, act, warm-start accelerations, controls, ...
_INTEGRATION_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


class MujocoVectorState:
    """The exact state of every copy of a synchronous MuJoCo vector env, as a checkpoint component.

    Per copy: MuJoCo's integration state (``mj_getState`` with ``mjSTATE_INTEGRATION``: all that
    ``mj_step`` reads, solver warm start included), every array of ``MjData`` (gymnasium's tasks
    read derived quantities such as body positions *before* stepping, and MuJoCo leaves those one
    substep stale: restoring them is what makes the next reward bit-identical), the
    ``TimeLimit`` step counter and the copy's NumPy generator (reset noise).
    """

    def __init__(self, vec_env: SyncVectorEnv) -> None:
        self.vec_env = vec_env

    def state_dict(self) -> dict[str, Any]:
        copies = []
        for copy in self.vec_env.envs:
            task = copy.unwrapped
            integration = np.empty(mujoco.mj_stateSize(task.model, _INTEGRATION_STATE))
            mujoco.mj_getState(task.model, task.data, integration, _INTEGRATION_STATE)
            copies.append(
                {
                    "integration": integration,
                    "arrays": {name: array.copy() for name, array in _data_arrays(task.data)},
                    "elapsed_steps": _time_limit(copy)._elapsed_steps,
                    "rng": task.np_random.bit_generator.state,
                }
            )
        return {"copies": copies}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        copies = state["copies"]
        if len(copies) != len(self.vec_env.envs):
            raise ValueError(f"simulator state of {len(copies)} env copies, this env has {len(self.vec_env.envs)}")
        for copy, saved in zip(self.vec_env.envs, copies, strict=True):
            task = copy.unwrapped
            integration = np.asarray(saved["integration"], dtype=np.float64)
            if integration.size != mujoco.mj_stateSize(task.model, _INTEGRATION_STATE):
                raise ValueError("simulator state saved from a different MuJoCo model")
            mujoco.mj_setState(task.model, task.data, integration, _INTEGRATION_STATE)
            # Sizes the contact/constraint arrays for this state; the saved derived values then
            # overwrite the recomputed ones. Constraint arrays whose size differs are rebuilt by
            # the next mj_step from the integration state, which is set last.
            mujoco.mj_forward(task.model, task.data)
            for name, array in _data_arrays(task.data):
                saved_array = np.asarray(saved["arrays"][name])
                if saved_array.shape == array.shape:
                    array[...] = saved_array
            mujoco.mj_setState(task.model, task.data, integration, _INTEGRATION_STATE)
            _time_limit(copy)._elapsed_steps = saved["elapsed_steps"]
            task.np_random.bit_generator.state = saved["rng"]


def _data_arrays(data: mujoco.MjData) -> list[tuple[str, np.ndarray]]:
    arrays = ((name, getattr(data, name)) for name in dir(data) if not name.startswith("_"))
    return [(name, value) for name, value in arrays if isinstance(value, np.ndarray)]


def _time_limit(env: gym.Env) -> TimeLimit:
    while not isinstance(env, TimeLimit):
        env = env.env
    return env
