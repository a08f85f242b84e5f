"""rsl_rl PPO on a gymnasium MuJoCo task: a minimal rsl_rl ``VecEnv`` over gymnasium's vector env.

Isaac Lab's ``isaaclab train --rl_library rsl_rl`` has no MuJoCo tasks, so ``benchmarks/learning.py``
runs rsl_rl's own ``OnPolicyRunner`` through this adapter instead, with the settings of diffrl's
Gaussian PPO on the task (``recipes/config/algorithm/ppo.yaml``: Isaac Lab's rsl_rl Ant reference,
[400, 200, 100] ELU networks, lr 5e-4 adaptive to KL 0.01, 5 epochs × 4 minibatches, entropy
coefficient 0.005, no observation normalization). The env matches diffrl's ``make_gym_env``:
synchronous copies, copy i seeded ``seed + i``, unclipped actions (MuJoCo clamps the control; the
control cost sees the raw action, as in diffrl), the task's time limit as a truncation. It
differs in one way rsl_rl needs: gymnasium's same-step auto-reset (rsl_rl bootstraps a time-out
from the value of the observation the action was taken in, as on Isaac Lab, instead of the
final observation). The console report is rsl_rl's ("Total steps", "Mean reward", ...).

    python benchmarks/rsl_rl_gym.py --task HalfCheetah-v5 --num-envs 64 --iterations 40 --seed 0
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from rsl_rl.env import VecEnv
from rsl_rl.runners import OnPolicyRunner
from tensordict import TensorDict


class GymnasiumVecEnv(VecEnv):
    """``num_envs`` synchronous copies of a gymnasium task with rsl_rl's ``VecEnv`` interface (CPU)."""

    def __init__(self, env_id: str, num_envs: int, seed: int, max_episode_steps: int | None = None) -> None:
        self.env = gym.make_vec(
            env_id,
            num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            max_episode_steps=max_episode_steps,
        )
        self.num_envs = num_envs
        self.num_actions = int(np.prod(self.env.single_action_space.shape))
        self.max_episode_length = int(max_episode_steps or gym.spec(env_id).max_episode_steps or 1000)
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        self.device = "cpu"
        self.cfg: dict[str, Any] = {"env_id": env_id, "num_envs": num_envs, "seed": seed}
        observation, _ = self.env.reset(seed=seed)
        self._observation = self._wrap(observation)

    @staticmethod
    def _wrap(observation: np.ndarray) -> TensorDict:
        tensor = torch.as_tensor(observation, dtype=torch.float32)
        return TensorDict({"policy": tensor}, batch_size=[tensor.shape[0]])

    def get_observations(self) -> TensorDict:
        return self._observation

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        observation, reward, terminated, truncated, _ = self.env.step(actions.detach().cpu().numpy())
        self._observation = self._wrap(observation)
        done = np.logical_or(terminated, truncated)
        self.episode_length_buf += 1
        self.episode_length_buf[torch.as_tensor(done)] = 0
        extras = {"time_outs": torch.as_tensor(truncated & ~terminated, dtype=torch.float32), "log": {}}
        return (
            self._observation,
            torch.as_tensor(reward, dtype=torch.float32),
            torch.as_tensor(done, dtype=torch.float32),
            extras,
        )

    def close(self) -> None:
        self.env.close()


def train_cfg(steps_per_env: int, iterations: int, seed: int) -> dict[str, Any]:
    """rsl_rl 5's runner config with diffrl's PPO settings (see the module docstring)."""
    model = {"class_name": "MLPModel", "hidden_dims": [400, 200, 100], "activation": "elu", "obs_normalization": False}
    return {
        "seed": seed,
        "device": "cpu",
        "num_steps_per_env": steps_per_env,
        "max_iterations": iterations,
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "save_interval": 10**9,
        "logger": "tensorboard",
        "check_for_nan": True,
        "actor": {
            **model,
            "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 1.0, "std_type": "scalar"},
        },
        "critic": {**model, "distribution_cfg": None},
        "algorithm": {
            "class_name": "PPO",
            "num_learning_epochs": 5,
            "num_mini_batches": 4,
            "learning_rate": 5.0e-4,
            "schedule": "adaptive",
            "gamma": 0.99,
            "lam": 0.95,
            "entropy_coef": 0.005,
            "desired_kl": 0.01,
            "max_grad_norm": 1.0,
            "value_loss_coef": 1.0,
            "use_clipped_value_loss": True,
            "clip_param": 0.2,
            "normalize_advantage_per_mini_batch": False,
            "rnd_cfg": None,
            "symmetry_cfg": None,
        },
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="HalfCheetah-v5", help="a gymnasium MuJoCo id")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps-per-env", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-episode-steps", type=int, help="default: the task's time limit")
    parser.add_argument("--log-dir", default="logs/rsl_rl_gym", help="rsl_rl's TensorBoard directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    env = GymnasiumVecEnv(args.task, args.num_envs, args.seed, args.max_episode_steps)
    try:
        runner = OnPolicyRunner(env, train_cfg(args.steps_per_env, args.iterations, args.seed), args.log_dir, "cpu")
        runner.learn(args.iterations, init_at_random_ep_len=False)
    finally:
        env.close()


if __name__ == "__main__":
    main()
