"""Offline stand-ins for Isaac Lab's robot assets, built from files that ship inside registry packages.

Isaac Lab 3.0 loads robot USD files from ``ISAACSIM_ASSET_ROOT`` (NVIDIA's asset server by
default). A machine without that server (CI included) needs a local root holding a stand-in at
every relative path a task's config addresses. This module lays out such a root reproducibly:

.. code-block:: bash

    python -m diffrl.envs.offline_assets                      # every task, default cache root
    python -m diffrl.envs.offline_assets --tasks Isaac-Cartpole Isaac-Ant
    python -m diffrl.envs.offline_assets --root DIR --force

:func:`diffrl.envs.isaaclab.make_isaaclab_env` calls :func:`build_offline_assets` itself for its
task when it falls back to offline assets. The default root is ``$DIFFRL_ASSET_ROOT`` if set,
else ``~/.cache/diffrl/isaaclab_assets``. The root is built per file: a build adds the requested
tasks' files, keeps every other file that is still current, and rebuilds a file whose recipe
(builder version, source package versions, converters) changed.

Three kinds of stand-ins (:data:`OFFLINE_TASKS` lists the tasks; docs/tasks.md their fidelity):

* USD files shipped by ``newton`` (Cartpole, Ant, Humanoid), edited in memory with ``pxr``. They
  need nothing but the training environment, so Cartpole and Ant build in about a second.
* URDF/MJCF robots from ``genesis-world`` (Go2, ANYmal-C for Anymal-D, Panda, Crazyflie), ``playground``
  (H1) and ``gymnasium-robotics`` (the Shadow Hand, :mod:`diffrl.envs.shadow_hand_stand_in`), converted
  by :mod:`diffrl.envs.asset_conversion` (a pinned converter environment, made once under
  ``~/.cache/diffrl/asset_build``).
* USDA text authored here: the ground plane, visual markers, the DexCube and the Sektion cabinet of
  Isaac-Open-Drawer-Franka (boxes with the Sektion's joints, :mod:`diffrl.envs.cabinet_stand_in`).

The stand-ins are *not* NVIDIA's assets: joint and body names match what the tasks address, but
geometry, masses and gains differ, so returns measured on them are comparable only with runs on
the same stand-ins. Each asset's ``note`` says how it differs; the root's marker file
(``.diffrl_offline_assets.json``) records every file's recipe and note.

Adding a robot means adding an :class:`OfflineAsset` entry (source plus the edits that make it
match the task's joint and body names) and naming it in :data:`OFFLINE_TASKS`; bump
``_BUILD_VERSION`` when an edit changes so cached files are rebuilt.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffrl.envs import cabinet_stand_in, shadow_hand_stand_in
from diffrl.envs.asset_conversion import (
    CONVERTER_REQUIREMENTS,
    WheelFiles,
    author_joint_drives,
    convert,
    converter_pins_key,
    drop_elements,
    drop_link,
    flatten_bodies,
    float_single_body,
    merge_fixed_link,
    mjcf_collision_only,
    set_joint_limits,
)

if TYPE_CHECKING:
    from pxr import Sdf

logger = logging.getLogger("diffrl.envs")

ASSET_ROOT_ENV_VAR = "DIFFRL_ASSET_ROOT"
# Bump whenever an entry or an edit changes: cached roots built by another version are rebuilt.
_BUILD_VERSION = 3
_MARKER = ".diffrl_offline_assets.json"

LayerEdit = Callable[["Sdf.Layer"], None]


@dataclass(frozen=True)
class PackageFile:
    """A data file shipped inside an installed Python package (``package`` is the import name)."""

    package: str
    path: str
    distribution: str

    def locate(self) -> Path:
        return Path(str(importlib.resources.files(self.package).joinpath(self.path)))


@dataclass(frozen=True)
class OfflineAsset:
    """One file of the offline root.

    Args:
        path: location relative to the asset root, exactly as Isaac Lab's config addresses it
            (``{ISAAC_NUCLEUS_DIR}/...`` is ``Isaac/...``).
        source: a USD file shipped in an installed package, a URDF/MJCF robot in a registry
            package's wheel (converted), or USDA text authored here.
        edits: applied in order to an in-memory copy of the source layer before it is written.
        note: how the stand-in differs from NVIDIA's asset (logged, recorded, in the marker).
    """

    path: str
    source: PackageFile | WheelFiles | str
    edits: tuple[LayerEdit, ...] = ()
    note: str = ""

    def recipe(self) -> dict:
        """What the file depends on; a cached file is rebuilt when this changes."""
        if isinstance(self.source, PackageFile):
            version = importlib.metadata.version(self.source.distribution)
            source = f"{self.source.distribution}=={version}:{self.source.path}"
        elif isinstance(self.source, WheelFiles):
            converters = ", ".join(CONVERTER_REQUIREMENTS[:2])
            source = f"{self.source.describe()} converted by {converters} (pins {converter_pins_key()})"
        else:
            source = "authored text sha256:" + hashlib.sha256(self.source.encode()).hexdigest()[:16]
        return {"version": _BUILD_VERSION, "source": source, "note": self.note}


def set_default_prim(name: str) -> LayerEdit:
    """Layer edit: point ``defaultPrim`` at ``name`` (Isaac Lab references the file's default prim)."""

    def edit(layer: Sdf.Layer) -> None:
        if not layer.GetPrimAtPath(f"/{name}"):
            raise ValueError(f"layer has no root prim /{name} to make its default prim")
        layer.defaultPrim = name

    return edit


# The spawner looks for a child prim of type ``Plane`` to bind the physics material to (Newton
# reads a collision ``Plane`` as infinite); the Franka tasks tint ``Looks/theGrid/Shader``.
_GROUND_PLANE_USDA = """#usda 1.0
(
    defaultPrim = "GroundPlane"
    metersPerUnit = 1
    kilogramsPerUnit = 1
    upAxis = "Z"
)

def Xform "GroundPlane"
{
    def Plane "CollisionPlane" (
        prepend apiSchemas = ["PhysicsCollisionAPI"]
    )
    {
        uniform token axis = "Z"
        uniform token purpose = "guide"
    }

    def Scope "Looks"
    {
        def Material "theGrid"
        {
            def Shader "Shader"
            {
                uniform token info:id = "UsdPreviewSurface"
                color3f inputs:diffuse_tint = (1, 1, 1)
            }
        }
    }
}
"""


def rename_prims(renames: Mapping[str, str]) -> LayerEdit:
    """Layer edit: rename prims (joints) by name, wherever they are; every name must be found once."""

    def edit(layer: Sdf.Layer) -> None:
        from pxr import Sdf

        found: dict[str, Sdf.Path] = {}
        layer.Traverse(Sdf.Path.absoluteRootPath, lambda p: found.update({p.name: p} if p.name in renames else {}))
        if set(found) != set(renames):
            raise ValueError(f"prims not found: {sorted(set(renames) - set(found))}")
        for name, path in found.items():
            spec = layer.GetPrimAtPath(path)
            spec.name = renames[name]

    return edit


# A visual marker (command arrows, goal frames): never simulated, drawn only by a visualizer.
_MARKER_USDA = """#usda 1.0
(
    defaultPrim = "marker"
    metersPerUnit = 1
    upAxis = "Z"
)

def Xform "marker"
{
    def Cube "shape"
    {
        double size = 0.1
    }
}
"""

GROUND_PLANE = OfflineAsset(
    path="Isaac/IsaacLab/Environments/Grid/default_ground_plane_checker_v1/default_ground_plane.usda",
    source=_GROUND_PLANE_USDA,
    note="ground plane: an infinite collision plane without the checker texture",
)
ARROW_MARKER = OfflineAsset(
    path="Isaac/Props/UIElements/arrow_x.usd",
    source=_MARKER_USDA,
    note="command-arrow marker: a plain cube (visual only)",
)
FRAME_MARKER = OfflineAsset(
    path="Isaac/Props/UIElements/frame_prim.usd",
    source=_MARKER_USDA,
    note="goal-frame marker: a plain cube (visual only)",
)
CARTPOLE = OfflineAsset(
    path="Isaac/IsaacLab/Robots/Classic/Cartpole/cartpole.usd",
    source=PackageFile("newton", "examples/assets/cartpole_single_pendulum.usda", distribution="newton"),
    # newton 1.6.1 names the default prim "cartPole" while the prim is "cartpole": the reference
    # would not resolve.
    edits=(set_default_prim("cartpole"),),
    note="Cartpole: newton's flattened copy of Isaac's cartpole (collision geometry only)",
)
ANT = OfflineAsset(
    path="Isaac/Robots/IsaacSim/Ant/ant_instanceable.usd",
    source=PackageFile("newton", "examples/assets/ant.usda", distribution="newton"),
    note="Ant: newton's ant with Isaac's joint names (not instanceable)",
)
HUMANOID = OfflineAsset(
    path="Isaac/Robots/IsaacSim/Humanoid/humanoid_instanceable.usd",
    source=PackageFile("newton", "examples/assets/humanoid.usda", distribution="newton"),
    # Isaac's humanoid names these joints after their child bodies.
    edits=(
        rename_prims(
            {
                "abdomen_x": "pelvis",
                "left_knee": "left_shin",
                "right_knee": "right_shin",
                "left_elbow": "left_lower_arm",
                "right_elbow": "right_lower_arm",
            }
        ),
    ),
    note="Humanoid: newton's MuJoCo-style humanoid with five joints renamed to Isaac's names (not instanceable)",
)
_GENESIS = ("genesis-world", "1.4.5")
# The velocity tasks' contact sensors and body patterns address Robot/<body>: bodies move out of
# the converter's Geometry/<parent>/<child> nesting, and the base floats.
_LEGGED_EDITS: tuple[LayerEdit, ...] = (flatten_bodies(drop_world_joint=True),)
GO2 = OfflineAsset(
    path="Isaac/IsaacLab/Robots/Unitree/Go2/go2.usd",
    source=WheelFiles(*_GENESIS, "genesis/assets/urdf/go2", "urdf/go2.urdf", "urdf", (drop_elements("visual"),)),
    edits=_LEGGED_EDITS,
    note="Go2: genesis-world's go2 URDF converted (primitive colliders, no visual meshes)",
)
ANYMAL_D = OfflineAsset(
    path="Isaac/IsaacLab/Robots/ANYbotics/ANYmal-D/anymal_d.usd",
    source=WheelFiles(
        *_GENESIS,
        "genesis/assets/urdf/anymal_c",
        "urdf/anymal_c.urdf",
        "urdf",
        # The URDF gives its revolute joints no limits (they would be locked at [0, 0]).
        (drop_elements("visual"), set_joint_limits({"HAA": (-0.72, 0.72), "HFE": (-9.42, 9.42), "KFE": (-9.42, 9.42)})),
    ),
    edits=_LEGGED_EDITS,
    note="Anymal-D: ANYmal-C (genesis-world's URDF, no ANYmal-D ships in a package) with HAA limits "
    "+-0.72 rad and HFE/KFE +-9.42 rad authored; primitive colliders, no visual meshes",
)
_H1_FILES = WheelFiles(
    "playground",
    "0.2.0",
    "mujoco_playground/_src/locomotion/h1/xmls",
    "h1_mjx_feetonly.xml",
    "mjcf",
    # Collisions on every geom (the torso-contact termination needs them); a geom named "torso"
    # would make the converter rename the joint "torso" to "torso_1".
    (mjcf_collision_only({"torso": "torso_box"}),),
)
_H1_NOTE = (
    "H1: MuJoCo Playground's feet-only H1 MJCF converted (primitive colliders on every body, no meshes, no actuators)"
)
# Both H1 velocity tasks load h1_minimal.usd.
H1_MINIMAL = OfflineAsset(
    path="Isaac/IsaacLab/Robots/Unitree/H1/h1_minimal.usd", source=_H1_FILES, edits=_LEGGED_EDITS, note=_H1_NOTE
)
# Isaac's Franka leaves the arm and finger gains to the USD (stiffness=None in the task config):
# the stand-in authors the Franka gains of Isaac Lab's legacy (PhysX) Panda config.
_PANDA_GAINS = {f"panda_joint{i}": (80.0, 4.0) for i in range(1, 8)} | {
    "panda_finger_joint1": (2e3, 1e2),
    "panda_finger_joint2": (2e3, 1e2),
}
FRANKA = OfflineAsset(
    path="Isaac/IsaacLab/Robots/FrankaEmika/franka_panda.usda",
    source=WheelFiles(
        *_GENESIS,
        "genesis/assets/urdf/panda_bullet",
        "panda.urdf",
        "urdf",
        (drop_elements("visual"), merge_fixed_link("panda_link8"), drop_link("panda_grasptarget")),
    ),
    # Not flattened: Lift addresses Robot/Geometry/panda_link0/.../panda_hand/... by path.
    edits=(author_joint_drives(_PANDA_GAINS),),
    note="Franka: genesis-world's panda_bullet URDF converted (mesh colliders, no visuals, panda_link8 "
    "merged into the hand, no finger mimic constraint, no physics/collider variant sets); joint drives "
    "authored: arm stiffness 80 N·m/rad damping 4 N·m·s/rad, fingers 2e3 N/m and 1e2 N·s/m",
)
# diffrl's own Diffrl-Quadcopter-Direct (Isaac Lab 3.0 dropped the Quadcopter task) addresses the
# path of Isaac Lab 2.x's CRAZYFLIE_CFG. The propeller links (massless, fixed, visual only) and the
# massless centre-of-mass link go: the body is one rigid link, floating.
_CF2X_LINKS = ("prop0_link", "prop1_link", "prop2_link", "prop3_link", "center_of_mass_link")
CRAZYFLIE = OfflineAsset(
    path="Isaac/Robots/Bitcraze/Crazyflie/cf2x.usd",
    source=WheelFiles(
        *_GENESIS,
        "genesis/assets/urdf/drones",
        "cf2x.urdf",
        "urdf",
        (drop_elements("visual"), *(drop_link(link) for link in _CF2X_LINKS)),
    ),
    # Named "body" as in NVIDIA's cf2x.usd (the task applies the thrust to it).
    edits=(float_single_body("base_link"), flatten_bodies(drop_world_joint=False), rename_prims({"base_link": "body"})),
    note="Crazyflie: genesis-world's cf2x URDF converted: one rigid body (mass 0.027 kg, inertia "
    "diag(1.4e-5, 1.4e-5, 2.17e-5) kg m^2 from the URDF), a cylinder collider (r 0.06 m, h 0.025 m), no "
    "propeller links (fixed, not spun) and no visual meshes",
)
# Isaac-Reorient-Cube-Shadow (diffrl.envs.shadow_hand_stand_in says how the hand is made).
SHADOW_HAND = OfflineAsset(
    path="Isaac/Robots_Multiphysics/ShadowRobot/ShadowHandMultiPhysics_v0/right_hand/right_hand.usda",
    source=WheelFiles(
        *shadow_hand_stand_in.GYMNASIUM_ROBOTICS,
        shadow_hand_stand_in.ASSET_DIRECTORY,
        shadow_hand_stand_in.ENTRY,
        "mjcf",
        (shadow_hand_stand_in.shadow_hand_mjcf(),),
    ),
    note="Shadow Hand: gymnasium-robotics' OpenAI Shadow hand MJCF converted, its 24 joints renamed to Isaac's "
    "rh_ names (OpenAI robot0:<X>J<n> -> rh_<X>J<n+1>; OpenAI's joint axes, ranges, masses, inertias and passive "
    "damping kept), bodies robot0:<b> -> rh_<b>; Isaac's tendon scheme authored (fixed tendon rh_<F>J0 = "
    "rh_<F>J2 + rh_<F>J1 per finger, a MuJoCo position actuator on each: kp 0.5, range [0, 3.1415], force +-1) "
    "in place of OpenAI's coupling tendons; primitive colliders only (capsules/boxes; the forearm has none), hand "
    "self-contacts limited to OpenAI's 18 finger/thumb pairs; no visuals, no Physics/Colliders variant sets",
)
DEX_CUBE = OfflineAsset(
    path="Isaac/Props/Blocks/DexCube/dex_cube_instanceable.usd",
    source=shadow_hand_stand_in.DEX_CUBE_USDA,
    note="DexCube: an untextured 6 cm collision cube of density 567 kg/m^3 (0.12 kg, the OpenAI block's "
    "density), not instanceable",
)
# Isaac-Open-Drawer-Franka's cabinet (diffrl.envs.cabinet_stand_in says how it is made).
SEKTION_CABINET = OfflineAsset(
    path="Isaac/Props/Sektion_Cabinet/sektion_cabinet_instanceable.usd",
    source=cabinet_stand_in.CABINET_USDA,
    note=cabinet_stand_in.CABINET_NOTE,
)

# The velocity tasks' terrain importer loads the ground plane from a default the config does not show.
_VELOCITY = (GROUND_PLANE, ARROW_MARKER)
OFFLINE_TASKS: Mapping[str, tuple[OfflineAsset, ...]] = {
    "Isaac-Cartpole": (CARTPOLE, GROUND_PLANE),
    "Isaac-Cartpole-Direct": (CARTPOLE, GROUND_PLANE),
    "Isaac-Ant": (ANT, GROUND_PLANE),
    "Isaac-Ant-Direct": (ANT, GROUND_PLANE),
    "Isaac-Humanoid": (HUMANOID, GROUND_PLANE),
    "Isaac-Humanoid-Direct": (HUMANOID, GROUND_PLANE),
    "Isaac-Velocity-Flat-UnitreeGo2": (GO2, *_VELOCITY),
    "Isaac-Velocity-Rough-UnitreeGo2": (GO2, *_VELOCITY),
    "Isaac-Velocity-Flat-AnymalD": (ANYMAL_D, *_VELOCITY),
    "Isaac-Velocity-Rough-AnymalD": (ANYMAL_D, *_VELOCITY),
    "Isaac-Velocity-Flat-H1": (H1_MINIMAL, *_VELOCITY),
    "Isaac-Velocity-Rough-H1": (H1_MINIMAL, *_VELOCITY),
    "Isaac-Reach-Franka": (FRANKA, GROUND_PLANE, FRAME_MARKER),
    "Isaac-Lift-Franka": (FRANKA, GROUND_PLANE, FRAME_MARKER),
    "Isaac-Open-Drawer-Franka": (FRANKA, SEKTION_CABINET, GROUND_PLANE, FRAME_MARKER),
    "Diffrl-Quadcopter-Direct": (CRAZYFLIE, GROUND_PLANE),
    "Isaac-Reorient-Cube-Shadow": (SHADOW_HAND, DEX_CUBE, GROUND_PLANE),
}
"""Task ids with an offline stand-in, and the files each needs."""

# Tasks whose files need no converter (newton's USD files and authored text only).
_LIGHT_TASKS = tuple(
    task for task, assets in OFFLINE_TASKS.items() if not any(isinstance(a.source, WheelFiles) for a in assets)
)


def stand_in_notes(task: str) -> tuple[str, ...]:
    """How ``task``'s offline files differ from NVIDIA's (one line per file, robot first)."""
    return tuple(asset.note for asset in OFFLINE_TASKS[task] if asset.note)


def default_asset_root() -> Path:
    """``$DIFFRL_ASSET_ROOT`` if set, else ``~/.cache/diffrl/isaaclab_assets``."""
    if os.environ.get(ASSET_ROOT_ENV_VAR):
        return Path(os.environ[ASSET_ROOT_ENV_VAR]).expanduser()
    return Path("~/.cache/diffrl/isaaclab_assets").expanduser()


def is_offline_root(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a local directory laid out by this builder."""
    return "://" not in str(root) and (Path(root) / _MARKER).is_file()


def _assets_for(tasks: Iterable[str]) -> dict[str, OfflineAsset]:
    unknown = sorted(set(tasks) - set(OFFLINE_TASKS))
    if unknown:
        raise ValueError(f"no offline stand-in for {', '.join(unknown)}; tasks with one: {', '.join(OFFLINE_TASKS)}")
    return {asset.path: asset for task in tasks for asset in OFFLINE_TASKS[task]}


def _recorded(root: Path) -> dict[str, dict]:
    """The marker's per-file recipes of the files present in ``root`` ({} if none or unreadable)."""
    try:
        files = json.loads((root / _MARKER).read_text()).get("files")
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    if not isinstance(files, dict):  # a marker of builder version 1 (a list of files): rebuild all
        return {}
    return {path: recipe for path, recipe in files.items() if (root / path).is_file()}


def _write_asset(asset: OfflineAsset, root: Path, converted: dict[WheelFiles, Sdf.Layer]) -> None:
    from pxr import Sdf

    layer = Sdf.Layer.CreateAnonymous(".usda")
    if isinstance(asset.source, PackageFile):
        source_path = asset.source.locate()
        if not source_path.is_file():
            raise FileNotFoundError(f"{asset.source.package} does not ship {asset.source.path} ({source_path})")
        # Copy into an anonymous layer so that edits never touch the installed file or the layer registry.
        layer.TransferContent(Sdf.Layer.FindOrOpen(str(source_path)))
    elif isinstance(asset.source, WheelFiles):
        if asset.source not in converted:
            converted[asset.source] = convert(asset.source)
        layer.TransferContent(converted[asset.source])
    else:
        layer.ImportFromString(asset.source)
    for edit in asset.edits:
        edit(layer)
    target = root / asset.path
    target.parent.mkdir(parents=True, exist_ok=True)
    # The file format follows the extension (".usd" is written as binary crate), as Isaac's own files are.
    if not layer.Export(str(target)):
        raise OSError(f"could not write {target}")


def build_offline_assets(
    root: str | os.PathLike[str] | None = None, *, tasks: Iterable[str] | None = None, force: bool = False
) -> Path:
    """Lay out the offline asset root for ``tasks`` and return its path.

    Files already in the root with the same recipe (see :meth:`OfflineAsset.recipe`) are kept
    (also those of other tasks); missing or stale ones are built, all of them when ``force`` is
    set. The new root is assembled in a sibling temporary directory and moved into place, so an
    interrupted build never leaves a half-written root behind.

    Args:
        root: where to build; defaults to :func:`default_asset_root`.
        tasks: task ids of :data:`OFFLINE_TASKS`; ``None`` means all of them. Tasks whose robots
            ship as USD (Cartpole, Ant, Humanoid) need no converter.
        force: rebuild every requested file even if it is current.

    Raises:
        ValueError: for a task without an offline stand-in.
        FileExistsError: if ``root`` is a non-empty directory that this builder did not make
            (it is never deleted).
    """
    root = Path(root).expanduser().resolve() if root is not None else default_asset_root().resolve()
    wanted = _assets_for(OFFLINE_TASKS if tasks is None else list(tasks))
    root.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time per root: two processes each rebuilding a different task subset
    # would otherwise replace each other's root and drop files (seen with parallel benchmarks).
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(root, wanted, force)


def _build_locked(root: Path, wanted: dict[str, OfflineAsset], force: bool) -> Path:
    recorded = _recorded(root) if is_offline_root(root) else {}
    recipes = {path: asset.recipe() for path, asset in wanted.items()}
    stale = [path for path in wanted if force or recorded.get(path) != recipes[path]]
    if not stale and is_offline_root(root):
        logger.debug("offline Isaac Lab assets are current at %s", root)
        return root
    if root.exists() and any(root.iterdir()) and not is_offline_root(root):
        raise FileExistsError(f"{root} is not empty and was not built by diffrl.envs.offline_assets: not replacing it")

    known = {asset.path: asset for assets in OFFLINE_TASKS.values() for asset in assets}
    kept = {p: r for p, r in recorded.items() if p not in stale and p in known and known[p].recipe() == r}
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
    try:
        for path in kept:
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / path, staging / path)
        converted: dict[WheelFiles, Sdf.Layer] = {}
        for path in stale:
            logger.info("building offline asset %s", path)
            _write_asset(wanted[path], staging, converted)
        files = {**kept, **{path: recipes[path] for path in stale}}
        marker = {"builder_version": _BUILD_VERSION, "converters": list(CONVERTER_REQUIREMENTS), "files": files}
        (staging / _MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if root.exists():
            shutil.rmtree(root)
        try:
            staging.rename(root)
        except OSError:
            # Another process built the same root concurrently: keep its copy if it is current.
            if any(_recorded(root).get(path) != recipe for path, recipe in recipes.items()):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built offline Isaac Lab assets (%d files new, %d kept) at %s", len(stale), len(kept), root)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help=f"default: ${ASSET_ROOT_ENV_VAR} or {default_asset_root()}")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["all"],
        help=f"task ids, 'all' (default) or 'light' (no converter: {', '.join(_LIGHT_TASKS)})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the files are current")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = {"all": list(OFFLINE_TASKS), "light": list(_LIGHT_TASKS)}.get(args.tasks[0], args.tasks)
    root = build_offline_assets(args.root, tasks=tasks, force=args.force)
    for task in tasks:
        logger.info("%s: %s", task, ", ".join(str(root / asset.path) for asset in OFFLINE_TASKS[task]))


if __name__ == "__main__":
    main()
