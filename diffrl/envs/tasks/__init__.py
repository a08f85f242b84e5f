"""diffrl's own Isaac Lab 3.0 tasks, registered with gymnasium under ``Diffrl-*`` ids.

Importing this package only registers the ids: the task modules (which import Isaac Lab's
simulation and asset modules and so fix its asset root, see :mod:`diffrl.envs.isaaclab`) load
when ``parse_env_cfg`` or ``gym.make`` resolves the entry points, after
:func:`~diffrl.envs.isaaclab.resolve_isaaclab_assets` has chosen the root.

* ``Diffrl-Quadcopter-Direct``: Isaac Lab 2.x's ``Isaac-Quadcopter-Direct`` (removed in 3.0),
  written for 3.0 in :mod:`diffrl.envs.tasks.quadcopter`.
"""

from __future__ import annotations

import gymnasium as gym

TASK_IDS: tuple[str, ...] = ("Diffrl-Quadcopter-Direct",)
"""The task ids this package registers."""

if "Diffrl-Quadcopter-Direct" not in gym.registry:
    gym.register(
        id="Diffrl-Quadcopter-Direct",
        entry_point=f"{__name__}.quadcopter:QuadcopterEnv",
        disable_env_checker=True,
        kwargs={"env_cfg_entry_point": f"{__name__}.quadcopter:QuadcopterEnvCfg"},
    )
