"""Isaac Lab 3.0 tasks as TorchRL environments, kit-less on the Newton backend (CPU or CUDA).

.. code-block:: python

    from diffrl.envs.isaaclab import make_isaaclab_env

    env = make_isaaclab_env("Isaac-Cartpole", num_envs=256, device="cpu", seed=0)
    rollout = env.rollout(16, break_when_any_done=False)  # rollout["next", "observation"]: [256, 16, 4]
    params = dataclasses.asdict(env.isaaclab_assets)  # which assets ran, for MLflow
    env.close()  # required before the next Isaac Lab env in this process

The returned env (batch size ``[B]``) is Isaac Lab's own ``IsaacLabTorchRLWrapper`` with the
``"policy"`` observation group renamed ``"observation"`` (float32, ``[B, obs_dim]``); ``"action"``
is ``[B, d]``, ``"reward"`` ``[B, 1]``, ``"done"``/``"terminated"``/``"truncated"`` ``[B, 1]`` bool.
Other observation groups (e.g. ``"critic"``) keep their names. With ``observation_groups`` (the
groups a task's rsl_rl reference feeds its networks, e.g. Lift's ``["policy", "proprio",
"perception"]``) ``"observation"`` is instead those groups concatenated in that order, and they are
removed::

    env = make_isaaclab_env("Isaac-Lift-Franka", 16, observation_groups=["policy", "proprio", "perception"])
    env.observation_spec["observation"].shape  # [16, 1250] = 100 + 190 + 960

Auto-reset and time-outs: Isaac Lab resets finished envs inside ``step``. The task config's
``compute_final_obs`` is switched on, so ``("next", "observation")`` of a done step is the true
final observation (captured before the reset), and the root ``"observation"`` of the following
step is the first of the new episode (TorchRL's partial ``_reset`` returns it without resetting
again). Bootstrapping on ``truncated`` is therefore correct.

One env per process at a time: Isaac Lab's ``SimulationContext`` is a process-wide singleton, so a
second env can only be made after ``env.close()`` of the first (Cartpole then Ant works that
way); :func:`make_isaaclab_env` raises otherwise. Mind that TorchRL 0.14.1's ``Collector`` closes
its env once ``total_frames`` are collected and on ``shutdown()`` (unless ``close_env=False``).

Warp compiles its kernels on the first env creation (40-70 s on 2 CPU cores) and caches them under
``$WARP_CACHE_PATH``, which this module sets to ``~/.cache/diffrl/warp`` unless already set, so
later processes start in seconds. Creating an env seeds Python's, NumPy's, torch's and Warp's
global random generators with ``seed`` (Isaac Lab's ``configure_seed``).

Robot assets: ``assets="auto"`` probes Isaac Lab's asset root (NVIDIA's server, or
``$ISAACSIM_ASSET_ROOT``) for ~2.5 s and falls back to the offline stand-ins of
:mod:`diffrl.envs.offline_assets`, logging which it uses (logger ``diffrl.envs``); the returned
env's ``isaaclab_assets`` records the choice. Isaac Lab copies its asset root into constants and
config defaults when its task/asset modules are imported, so the choice is fixed per process from
then on: make the first env before importing ``isaaclab_tasks``, ``isaaclab_assets`` or
``isaaclab.sim`` yourself (or export ``ISAACSIM_ASSET_ROOT``), else switching roots raises.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from torchrl.envs import CatTensors, EnvBase, RenameTransform, Transform, TransformedEnv

from diffrl.envs.offline_assets import OFFLINE_TASKS, build_offline_assets, is_offline_root, stand_in_notes

logger = logging.getLogger("diffrl.envs")

AssetsMode = Literal["auto", "official", "offline"]

_OBSERVATION_GROUP = "policy"
_OBSERVATION_KEY = "observation"
# A file every task loads; its presence tells whether an asset root is usable.
_PROBE_PATH = "Isaac/IsaacLab/Environments/Grid/default_ground_plane_checker_v1/default_ground_plane.usda"
_PROBE_TIMEOUT_S = 2.5
# Modules that copy the asset root into constants and config defaults when imported.
_ROOT_COPYING_MODULES = ("isaaclab.sim.spawners.from_files.from_files_cfg", "isaaclab_assets")
# Files only a renderer reads (MDL materials, HDR skies): envs made here have no visualizer, so the
# offline root need not hold them.
_RENDER_ONLY_SUFFIXES = (".mdl", ".hdr")


@dataclass(frozen=True)
class IsaacLabAssets:
    """Which robot assets an env was built from (``dataclasses.asdict`` gives MLflow params).

    Attributes:
        source: ``"official"`` (Isaac Lab's asset root: NVIDIA's server or ``$ISAACSIM_ASSET_ROOT``)
            or ``"offline"`` (diffrl's stand-ins; returns are comparable only with runs on them).
        root: the asset root the task's files were loaded from.
        stand_ins: with offline assets, how each stand-in file differs from NVIDIA's (robot first).
        config_changes: with offline assets, the changes made to the task's config so that it runs
            on the stand-ins (e.g. Anymal-D's actuator network replaced by a DC motor model).
    """

    source: Literal["official", "offline"]
    root: str
    stand_ins: tuple[str, ...] = field(default=(), compare=False)
    config_changes: tuple[str, ...] = field(default=(), compare=False)


def _configure_warp_cache() -> None:
    # Warp reads WARP_CACHE_PATH when it initializes, which happens on the first Isaac Lab import.
    path = os.environ.setdefault("WARP_CACHE_PATH", str(Path("~/.cache/diffrl/warp").expanduser()))
    import warp

    if warp.config.kernel_cache_dir is not None and not warp.config.kernel_cache_dir.startswith(os.path.realpath(path)):
        logger.warning(
            "Warp was initialized before diffrl could set WARP_CACHE_PATH; kernels cache in %s",
            warp.config.kernel_cache_dir,
        )


def _available_isaaclab_tasks() -> list[str]:
    """Registered Isaac Lab task ids (``Isaac-Cartpole``, ``Isaac-Ant``, ...; 3.0 ids have no ``-v0``) and diffrl's own.

    diffrl's tasks (:mod:`diffrl.envs.tasks`, e.g. ``Diffrl-Quadcopter-Direct``) are Isaac Lab
    direct-workflow envs registered under ``Diffrl-`` ids.
    """
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401  (registers the tasks)

    from diffrl.envs.tasks import TASK_IDS

    return sorted(task for task in gym.registry if task.startswith("Isaac") or task in TASK_IDS)


@lru_cache(maxsize=1)
def _official_root() -> str:
    """Isaac Lab's own asset root (``$ISAACSIM_ASSET_ROOT``, else NVIDIA's server), read before diffrl changes it."""
    from isaaclab.utils.assets import NUCLEUS_ASSET_ROOT_DIR

    return NUCLEUS_ASSET_ROOT_DIR


def _use_asset_root(root: str) -> None:
    """Point Isaac Lab at ``root`` (its ``ISAACSIM_ASSET_ROOT``).

    Isaac Lab reads the root once, in ``isaaclab.utils.assets``, and its config modules copy it
    into path constants and dataclass defaults (e.g. the ground plane's ``usd_path``) when they
    are imported. The root can therefore change only before those imports: the light
    ``isaaclab.utils.assets`` module is re-executed with the new value, as if the variable had
    been set before Python started.
    """
    import isaaclab.utils.assets as isaaclab_assets

    current = isaaclab_assets.NUCLEUS_ASSET_ROOT_DIR
    if current == root or ("://" not in current and os.path.realpath(current) == os.path.realpath(root)):
        return
    copied = [name for name in _ROOT_COPYING_MODULES if name in sys.modules]
    if copied:
        raise RuntimeError(
            f"Isaac Lab's asset root is already fixed to {current} in this process "
            f"({', '.join(copied)} imported), so it cannot switch to {root}. Make the env before importing Isaac Lab "
            f"task or asset modules, or set ISAACSIM_ASSET_ROOT={root} before starting Python."
        )
    os.environ["ISAACSIM_ASSET_ROOT"] = root
    importlib.reload(isaaclab_assets)


@lru_cache(maxsize=4)
def _root_reachable(root: str) -> bool:
    """Whether ``root`` serves the probe file, decided within ``_PROBE_TIMEOUT_S`` (no retries)."""
    if "://" not in root:
        return (Path(root) / _PROBE_PATH).is_file()
    answer: list[bool] = []

    def probe() -> None:
        request = urllib.request.Request(f"{root}/{_PROBE_PATH}", method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S) as response:
                answer.append(response.status < 400)
        except (urllib.error.URLError, OSError, ValueError):
            answer.append(False)

    # A daemon thread bounds the wait: urlopen's timeout does not cover a hanging DNS lookup.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT_S)
    return bool(answer and answer[0])


def resolve_isaaclab_assets(task: str, assets: AssetsMode = "auto") -> IsaacLabAssets:
    """Choose the asset root for ``task`` and point Isaac Lab at it (building the offline root if stale).

    ``"auto"`` uses the official root when it answers a quick probe, else the offline stand-ins.
    The choice holds for the whole process once Isaac Lab's task modules are imported.

    Raises:
        ValueError: for an invalid ``assets``.
        RuntimeError: if Isaac Lab is already fixed to another root in this process.
    """
    if assets not in ("auto", "official", "offline"):
        raise ValueError(f"assets must be 'auto', 'official' or 'offline', got {assets!r}")
    official = _official_root()
    tasks = [task] if task in OFFLINE_TASKS else []
    if assets == "official" or (assets == "auto" and _root_reachable(official)):
        # ISAACSIM_ASSET_ROOT may itself name a root this builder made: it gets the task's files.
        if is_offline_root(official):
            chosen = IsaacLabAssets(source="offline", root=str(build_offline_assets(official, tasks=tasks)))
        else:
            chosen = IsaacLabAssets(source="official", root=official)
        why = "requested" if assets == "official" else "reachable"
    else:
        chosen = IsaacLabAssets(source="offline", root=str(build_offline_assets(tasks=tasks)))
        why = "requested" if assets == "offline" else f"{official} is unreachable"
    if chosen.source == "official":
        logger.info("Isaac Lab assets for %s: official, from %s (%s)", task, chosen.root, why)
    else:
        logger.warning(
            "Isaac Lab assets for %s: OFFLINE STAND-INS from %s (%s). They are not NVIDIA's assets: "
            "returns are comparable only with runs on the same stand-ins.",
            task,
            chosen.root,
            why,
        )
    _use_asset_root(chosen.root)
    return chosen


def _anymal_simple_actuator(cfg: Any) -> str:
    from isaaclab_assets.robots.anymal import ANYDRIVE_3_SIMPLE_ACTUATOR_CFG

    cfg.scene.robot.actuators["legs"] = copy.deepcopy(ANYDRIVE_3_SIMPLE_ACTUATOR_CFG)
    return (
        "scene.robot.actuators['legs']: the ANYdrive 3 LSTM actuator network (anydrive_3_lstm_jit.pt, not "
        "available offline) replaced by Isaac Lab's ANYDRIVE_3_SIMPLE_ACTUATOR_CFG (DC motor, stiffness 40, damping 5)"
    )


def _franka_driven_finger2(cfg: Any) -> str:
    actuator = cfg.scene.robot.actuators["panda_finger2_passive"]
    actuator.stiffness = None
    actuator.damping = None
    return (
        "scene.robot.actuators['panda_finger2_passive']: stiffness/damping 0 -> the stand-in's authored drive "
        "(2e3/1e2), since the stand-in has no mimic constraint to move the second finger"
    )


def _crazyflie_without_propeller_joints(cfg: Any) -> str:
    cfg.scene.robot.actuators = {}
    return (
        "scene.robot.actuators: the propellers' 'dummy' actuator (stiffness 0, damping 0) dropped, since the "
        "stand-in has no propeller joints (the thrust is applied to the body either way)"
    )


_STAND_IN_CONFIG_CHANGES: dict[str, tuple[Callable[[Any], str], ...]] = {
    "Isaac-Velocity-Flat-AnymalD": (_anymal_simple_actuator,),
    "Isaac-Velocity-Rough-AnymalD": (_anymal_simple_actuator,),
    "Isaac-Reach-Franka": (_franka_driven_finger2,),
    "Isaac-Lift-Franka": (_franka_driven_finger2,),
    "Isaac-Open-Drawer-Franka": (_franka_driven_finger2,),
    "Diffrl-Quadcopter-Direct": (_crazyflie_without_propeller_joints,),
}
"""Per task, the config edits that make it run on its offline stand-in; each returns what it changed."""


def _adapt_config_to_stand_ins(task: str, cfg: Any) -> tuple[str, ...]:
    changes = tuple(change(cfg) for change in _STAND_IN_CONFIG_CHANGES.get(task, ()))
    for change in changes:
        logger.warning("%s config changed for its offline stand-in: %s", task, change)
    return changes


def _asset_files(node: Any, root: str, seen: set[int]) -> set[str]:
    """Every string in a config tree that names a file under ``root``."""
    if isinstance(node, str):
        return {node} if node.startswith(root + "/") else set()
    if isinstance(node, (list, tuple)):
        children = node
    elif isinstance(node, dict):
        children = list(node.values())
    elif dataclasses.is_dataclass(node) and not isinstance(node, type) and id(node) not in seen:
        seen.add(id(node))
        children = [getattr(node, field.name) for field in dataclasses.fields(node)]
    else:
        return set()
    return set().union(*(_asset_files(child, root, seen) for child in children))


def make_isaaclab_env(
    task: str,
    num_envs: int,
    device: str = "cpu",
    seed: int = 0,
    assets: AssetsMode = "auto",
    episode_length_s: float | None = None,
    observation_groups: Sequence[str] | None = None,
) -> EnvBase:
    """Build an Isaac Lab 3.0 task kit-less on Newton and return it as a TorchRL env.

    Args:
        task: Isaac Lab task id, e.g. ``"Isaac-Cartpole"`` or ``"Isaac-Ant"``, or one of diffrl's own
            (:mod:`diffrl.envs.tasks`: ``"Diffrl-Quadcopter-Direct"``).
        num_envs: number of parallel environments B (the env's batch size).
        device: simulation and tensordict device (``"cpu"``, ``"cuda"``, ``"cuda:0"``).
        seed: seeds the task (and the global RNGs, see the module docstring).
        assets: ``"official"`` (Isaac Lab's asset root), ``"offline"`` (diffrl's stand-ins, see
            :mod:`diffrl.envs.offline_assets`) or ``"auto"`` (official if reachable, else offline).
        episode_length_s: overrides the task's episode length (time-out) in seconds; an episode
            lasts ``ceil(episode_length_s / step_dt)`` steps.
        observation_groups: the task's observation groups that make ``"observation"``, concatenated
            in this order along the last dim (e.g. ``["policy", "proprio", "perception"]``, as
            Isaac-Lift-Franka's rsl_rl reference feeds its actor and critic); they are removed from
            the tensordict. ``None`` (the default): the ``"policy"`` group alone, renamed.

    Returns:
        A :class:`~torchrl.envs.TransformedEnv` over ``IsaacLabTorchRLWrapper`` with keys
        ``"observation"`` [B, obs_dim], ``"action"`` [B, d], ``"reward"`` [B, 1] and
        ``"done"``/``"terminated"``/``"truncated"`` [B, 1]. ``env.isaaclab_assets`` (an
        :class:`IsaacLabAssets`) says which assets were used. Close it with ``env.close()``.

    Raises:
        ValueError: for an unknown task id (the message lists the available ones), when offline
            assets are needed for a task without a stand-in, or for an observation group the task
            does not have (the message lists its groups; the env is closed again).
        RuntimeError: if another Isaac Lab env is still open in this process.
    """
    if observation_groups is not None:
        if isinstance(observation_groups, str):
            raise TypeError(f"observation_groups must be a list of group names, got the string {observation_groups!r}")
        observation_groups = list(observation_groups)
        if not observation_groups or len(set(observation_groups)) != len(observation_groups):
            raise ValueError(f"observation_groups must name distinct groups, got {observation_groups}")
    _configure_warp_cache()
    # Before anything imports Isaac Lab's task modules, which fixes the asset root for the process.
    chosen = resolve_isaaclab_assets(task, assets)
    tasks = _available_isaaclab_tasks()
    if task not in tasks:
        raise ValueError(f"unknown Isaac Lab task {task!r}; available tasks: {', '.join(tasks)}")
    if chosen.source == "offline" and task not in OFFLINE_TASKS:
        raise ValueError(
            f"{task!r} has no offline stand-in (assets={assets!r}, official root {_official_root()}); "
            f"tasks with one: {', '.join(sorted(OFFLINE_TASKS))}"
        )

    import gymnasium as gym
    from isaaclab.app import launch_simulation
    from isaaclab.sim import SimulationContext
    from isaaclab_rl.torchrl import IsaacLabTorchRLWrapper
    from isaaclab_tasks.utils.parse_cfg import parse_env_cfg

    if SimulationContext.instance() is not None:
        raise RuntimeError(
            "an Isaac Lab env is already open in this process (its SimulationContext is a singleton): "
            "call env.close() on it before making another"
        )

    cfg = parse_env_cfg(task, device=device, num_envs=num_envs)
    if chosen.source == "offline":
        for note in stand_in_notes(task):
            logger.warning("%s offline stand-in: %s", task, note)
        chosen = dataclasses.replace(
            chosen, stand_ins=stand_in_notes(task), config_changes=_adapt_config_to_stand_ins(task, cfg)
        )
        needed = _asset_files(cfg, chosen.root, set())
        missing = sorted(p for p in needed if not p.endswith(_RENDER_ONLY_SUFFIXES) and not Path(p).is_file())
        if missing:
            raise FileNotFoundError(f"{task} needs files missing from the offline asset root: {', '.join(missing)}")
    cfg.seed = seed
    cfg.compute_final_obs = True
    if episode_length_s is not None:
        cfg.episode_length_s = episode_length_s

    start = time.perf_counter()
    with launch_simulation(cfg, {"device": device, "visualizer": ["none"]}):
        isaac_env = gym.make(task, cfg=cfg)
    logger.info("created %s with %d envs on %s in %.1f s", task, num_envs, device, time.perf_counter() - start)

    base = IsaacLabTorchRLWrapper(isaac_env)
    try:
        transform = _observation_transform(base, observation_groups)
    except ValueError:
        base.close()  # the simulation is a process-wide singleton: never leave it open
        raise
    env = TransformedEnv(base, transform)
    env.isaaclab_assets = chosen
    return env


def _observation_transform(env: EnvBase, groups: list[str] | None) -> Transform:
    """The transform that makes ``"observation"``: the ``"policy"`` group renamed, or ``groups`` concatenated."""
    if groups is None or groups == [_OBSERVATION_GROUP]:
        return RenameTransform(in_keys=[_OBSERVATION_GROUP], out_keys=[_OBSERVATION_KEY], create_copy=False)
    spec = env.observation_spec
    available = list(spec.keys())
    unknown = [group for group in groups if group not in available]
    if unknown:
        raise ValueError(
            f"observation group(s) {unknown} not in the task's observation groups {available} (env.observation_groups)"
        )
    flat_dims = len(env.batch_size) + 1
    not_flat = {group: tuple(spec[group].shape) for group in groups if len(spec[group].shape) != flat_dims}
    if not_flat:
        raise ValueError(f"observation groups {not_flat} are not [B, n] tensors: they cannot be concatenated")
    # sort=False: the order is the reference's (CatTensors sorts its keys by default).
    return CatTensors(in_keys=groups, out_key=_OBSERVATION_KEY, del_keys=True, sort=False)
