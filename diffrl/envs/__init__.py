"""Env factories (Isaac Lab on Newton, gymnasium MuJoCo), the training transforms, offline assets.

The backends are imported on first use: ``from diffrl.envs import make_gym_env`` loads MuJoCo,
``make_isaaclab_env`` loads Isaac Lab, and neither is needed for the rest.
"""

from typing import Any

from diffrl.envs.observation_normalizer import ObservationNormalizer
from diffrl.envs.training_env import make_env, observation_normalizer, training_env

__all__ = [
    "ObservationNormalizer",
    "make_env",
    "make_gym_env",
    "make_isaaclab_env",
    "observation_normalizer",
    "training_env",
]


def __getattr__(name: str) -> Any:
    if name == "make_gym_env":
        from diffrl.envs.gym import make_gym_env

        return make_gym_env
    if name == "make_isaaclab_env":
        from diffrl.envs.isaaclab import make_isaaclab_env

        return make_isaaclab_env
    raise AttributeError(f"module 'diffrl.envs' has no attribute {name!r}")
