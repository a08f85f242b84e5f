"""The env a training run steps: a backend's batched env plus the transforms training reads.

:func:`make_env` builds the backend's env from a recipe's ``env`` config (Isaac Lab on Newton, or
gymnasium MuJoCo); :func:`training_env` adds, in this order, the running observation normalizer
(optional), ``RewardSum`` (``"episode_reward"``) and ``StepCounter`` (``"step_count"``), the keys
from which the trainer reports episode returns and lengths. Both are all a user script needs to
get the env the recipes train on::

    env = training_env(make_gym_env("HalfCheetah-v5", 64), normalize_observations=True)
    normalizer = observation_normalizer(env)  # what a checkpoint and policy.pt save
"""

from __future__ import annotations

from omegaconf import DictConfig
from tensordict.utils import NestedKey
from torchrl.envs import Compose, EnvBase, RewardSum, StepCounter, TransformedEnv

from diffrl.envs.observation_normalizer import ObservationNormalizer

EPISODE_RETURN_KEY = "episode_reward"
EPISODE_LENGTH_KEY = "step_count"


def make_env(env_cfg: DictConfig, seed: int, device: str | None = None) -> EnvBase:
    """The batched TorchRL env a recipe's ``env`` config names (``device`` overrides the config's).

    ``env_cfg.backend`` is ``"isaaclab"`` (an Isaac Lab 3.0 task on Newton, offline assets when
    NVIDIA's server is unreachable; ``env_cfg.observation_groups``, if set, the observation groups
    concatenated into ``"observation"``) or ``"mujoco"`` (gymnasium MuJoCo, synchronous copies).
    """
    if not isinstance(env_cfg.num_envs, int) or env_cfg.num_envs < 1:
        raise ValueError(f"env.num_envs must be an integer >= 1, got {env_cfg.num_envs!r}")
    device = device or env_cfg.device
    if env_cfg.backend == "isaaclab":
        from diffrl.envs.isaaclab import make_isaaclab_env

        return make_isaaclab_env(
            env_cfg.task,
            env_cfg.num_envs,
            device=device,
            seed=seed,
            assets=env_cfg.assets,
            episode_length_s=env_cfg.get("episode_length_s"),
            observation_groups=env_cfg.get("observation_groups"),
        )
    if env_cfg.backend == "mujoco":
        from diffrl.envs.gym import make_gym_env

        return make_gym_env(
            env_cfg.task,
            env_cfg.num_envs,
            device=device,
            seed=seed,
            max_episode_steps=env_cfg.max_episode_steps,
        )
    raise ValueError(f"unknown env.backend {env_cfg.backend!r}; choose 'isaaclab' or 'mujoco'")


def training_env(
    env: EnvBase, *, observation_key: NestedKey = "observation", normalize_observations: bool = True
) -> TransformedEnv:
    """``env`` with the training transforms: [``ObservationNormalizer``], ``RewardSum``, ``StepCounter``.

    Args:
        env: a batched env, batch size [num_envs].
        observation_key: the observation the normalizer (and the actor) reads.
        normalize_observations: add the running :class:`ObservationNormalizer` of ``observation_key``
            (decay 1, statistics over all envs, as rsl_rl's empirical normalization).

    Example:
        >>> from diffrl.envs.gym import make_gym_env
        >>> env = training_env(make_gym_env("HalfCheetah-v5", num_envs=2))
        >>> rollout = env.rollout(3, break_when_any_done=False)
        >>> rollout["next", "episode_reward"].shape, rollout["next", "step_count"][0, -1].item()
        (torch.Size([2, 3, 1]), 3)
        >>> type(observation_normalizer(env)).__name__
        'ObservationNormalizer'
    """
    if len(env.batch_size) != 1 or env.batch_size.numel() < 1:
        raise ValueError(f"training needs a batched env with batch size [num_envs], got {env.batch_size}")
    if observation_key not in env.observation_spec.keys(True):
        raise ValueError(
            f"the env has no observation {observation_key!r}; its observations are "
            f"{sorted(str(key) for key in env.observation_spec.keys(True, True))} (set env.observation_key)"
        )
    transforms = [RewardSum(), StepCounter()]  # writing EPISODE_RETURN_KEY and EPISODE_LENGTH_KEY
    if normalize_observations:
        transforms.insert(0, ObservationNormalizer.for_key(observation_key))
    # Not unwrapped into the backend's own TransformedEnv: its attributes (the MuJoCo simulator state,
    # Isaac Lab's asset record) stay reachable as ``base_env``'s.
    return TransformedEnv(env, Compose(*transforms), auto_unwrap=False)


def observation_normalizer(env: EnvBase) -> ObservationNormalizer | None:
    """The :class:`ObservationNormalizer` among ``env``'s transforms (``None`` when it has none)."""
    transform = getattr(env, "transform", None)
    if transform is None:
        return None
    candidates = transform if isinstance(transform, Compose) else [transform]
    return next((t for t in candidates if isinstance(t, ObservationNormalizer)), None)


def has_episode_statistics(env: EnvBase) -> bool:
    """Whether ``env`` writes the episode return and length keys the trainer reports."""
    keys = set(env.full_reward_spec.keys(True)) | set(env.observation_spec.keys(True))
    return EPISODE_RETURN_KEY in keys and EPISODE_LENGTH_KEY in keys
