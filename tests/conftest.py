"""Shared test fixtures.

Isaac Lab envs are expensive (the first creation compiles Warp kernels, ~40 s on 2 cores; later
ones take ~5-8 s) and only one can be open per process. Tests get them from the session-scoped
``isaaclab_env`` cache, which keeps the last env alive and closes it only when another
configuration is requested::

    def test_something(isaaclab_env):
        env = isaaclab_env("Isaac-Cartpole", num_envs=16)  # TransformedEnv, see diffrl.envs.isaaclab
        env.reset()  # the env is shared: it may be mid-episode

Never hold on to an env across a call that asks for another configuration, and never close it:
TorchRL 0.14.1's ``Collector`` does so once ``total_frames`` are collected and on ``shutdown()``,
so give it ``total_frames=-1``, stop by hand and call ``shutdown(close_env=False)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from torchrl.envs import EnvBase

from diffrl.envs.offline_assets import default_asset_root

# Tests never download: point Isaac Lab at the offline root before any test module can import
# Isaac Lab (which fixes its asset root for the process). An explicit ISAACSIM_ASSET_ROOT wins.
os.environ.setdefault("ISAACSIM_ASSET_ROOT", str(default_asset_root().resolve()))


class IsaacLabEnvCache:
    """Makes Isaac Lab envs on CPU with offline assets, keeping at most one open (Isaac Lab allows one)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._env: EnvBase | None = None

    def __call__(self, task: str, num_envs: int = 16, **kwargs: Any) -> EnvBase:
        """The env for this configuration; ``kwargs`` go to :func:`~diffrl.envs.isaaclab.make_isaaclab_env`."""
        from diffrl.envs.isaaclab import make_isaaclab_env

        key = (task, num_envs, tuple(sorted(kwargs.items())))
        if self._env is None or self._key != key or self._env.is_closed:
            self.close()
            kwargs = {"device": "cpu", "seed": 0, "assets": "offline", **kwargs}
            self._env = make_isaaclab_env(task, num_envs, **kwargs)
            self._key = key
        return self._env

    def close(self) -> None:
        if self._env is not None and not self._env.is_closed:
            self._env.close()
        self._env = None
        self._key = None


@pytest.fixture(scope="session")
def isaaclab_env() -> Iterator[IsaacLabEnvCache]:
    """Session cache of Isaac Lab envs: ``isaaclab_env(task, num_envs, **make_isaaclab_env_kwargs)``."""
    pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed")
    cache = IsaacLabEnvCache()
    yield cache
    cache.close()


@pytest.fixture
def cartpole_env(isaaclab_env: IsaacLabEnvCache) -> EnvBase:
    """Isaac-Cartpole, 16 envs on CPU, offline assets, seed 0 (shared: reset it before use)."""
    return isaaclab_env("Isaac-Cartpole", 16)
