"""Offline stand-ins for Isaac Lab's robot assets, built from files that ship inside installed packages.

Isaac Lab 3.0 loads robot USD files from ``ISAACSIM_ASSET_ROOT`` (NVIDIA's asset server by
default). A machine without that server (CI included) needs a local root holding a stand-in at
every relative path a task's config addresses. This module lays out such a root reproducibly:

.. code-block:: bash

    python -m diffrl.envs.offline_assets              # default cache root, rebuilt only when stale
    python -m diffrl.envs.offline_assets --root DIR --force

:func:`diffrl.envs.isaaclab.make_isaaclab_env` calls :func:`build_offline_assets` itself when it
falls back to offline assets. The default root is ``$DIFFRL_ASSET_ROOT`` if set, else
``~/.cache/diffrl/isaaclab_assets``.

The stand-ins are *not* NVIDIA's assets: newton's ``ant.usda`` and
``cartpole_single_pendulum.usda`` carry the same joint names and similar geometry, but returns
measured on them are comparable only with runs on the same stand-ins.

Adding a robot (Humanoid, Go2, ANYmal, H1, Franka, ...) means adding an :class:`OfflineAsset`
entry (source file plus the layer edits that make it match the task's joint and body names)
and naming it in :data:`OFFLINE_TASKS`; bump ``_BUILD_VERSION`` so cached roots are rebuilt.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pxr import Sdf

logger = logging.getLogger("diffrl.envs")

ASSET_ROOT_ENV_VAR = "DIFFRL_ASSET_ROOT"
# Bump whenever an entry or an edit changes: cached roots built by another version are rebuilt.
_BUILD_VERSION = 1
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
        source: a package file, or USDA text authored here.
        edits: applied in order to an in-memory copy of the source layer before it is written.
        note: how the stand-in differs from NVIDIA's asset.
    """

    path: str
    source: PackageFile | str
    edits: tuple[LayerEdit, ...] = ()
    note: str = ""


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

GROUND_PLANE = OfflineAsset(
    path="Isaac/IsaacLab/Environments/Grid/default_ground_plane_checker_v1/default_ground_plane.usda",
    source=_GROUND_PLANE_USDA,
    note="an infinite collision plane without the checker texture",
)
CARTPOLE = OfflineAsset(
    path="Isaac/IsaacLab/Robots/Classic/Cartpole/cartpole.usd",
    source=PackageFile("newton", "examples/assets/cartpole_single_pendulum.usda", distribution="newton"),
    # newton 1.6.1 names the default prim "cartPole" while the prim is "cartpole": the reference
    # would not resolve.
    edits=(set_default_prim("cartpole"),),
    note="newton's flattened copy of Isaac's cartpole (collision geometry only)",
)
ANT = OfflineAsset(
    path="Isaac/Robots/IsaacSim/Ant/ant_instanceable.usd",
    source=PackageFile("newton", "examples/assets/ant.usda", distribution="newton"),
    note="newton's ant with Isaac's joint names (not instanceable)",
)

OFFLINE_TASKS: Mapping[str, tuple[OfflineAsset, ...]] = {
    "Isaac-Cartpole": (CARTPOLE, GROUND_PLANE),
    "Isaac-Cartpole-Direct": (CARTPOLE, GROUND_PLANE),
    "Isaac-Ant": (ANT, GROUND_PLANE),
    "Isaac-Ant-Direct": (ANT, GROUND_PLANE),
}
"""Task ids with an offline stand-in, and the files each needs."""


def default_asset_root() -> Path:
    """``$DIFFRL_ASSET_ROOT`` if set, else ``~/.cache/diffrl/isaaclab_assets``."""
    if os.environ.get(ASSET_ROOT_ENV_VAR):
        return Path(os.environ[ASSET_ROOT_ENV_VAR]).expanduser()
    return Path("~/.cache/diffrl/isaaclab_assets").expanduser()


def is_offline_root(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a local directory laid out by this builder."""
    return "://" not in str(root) and (Path(root) / _MARKER).is_file()


def _all_assets() -> list[OfflineAsset]:
    unique = {asset.path: asset for assets in OFFLINE_TASKS.values() for asset in assets}
    return [unique[path] for path in sorted(unique)]


def _fingerprint() -> dict:
    """What a built root depends on: this builder's version, its files, and the source packages' versions."""
    assets = _all_assets()
    distributions = sorted({a.source.distribution for a in assets if isinstance(a.source, PackageFile)})
    return {
        "version": _BUILD_VERSION,
        "files": [a.path for a in assets],
        "sources": {name: importlib.metadata.version(name) for name in distributions},
    }


def _is_current(root: Path, fingerprint: dict) -> bool:
    marker = root / _MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded == fingerprint and all((root / path).is_file() for path in fingerprint["files"])


def _write_asset(asset: OfflineAsset, root: Path) -> None:
    from pxr import Sdf

    layer = Sdf.Layer.CreateAnonymous(".usda")
    if isinstance(asset.source, PackageFile):
        source_path = asset.source.locate()
        if not source_path.is_file():
            raise FileNotFoundError(f"{asset.source.package} does not ship {asset.source.path} ({source_path})")
        # Copy into an anonymous layer so that edits never touch the installed file or the layer registry.
        layer.TransferContent(Sdf.Layer.FindOrOpen(str(source_path)))
    else:
        layer.ImportFromString(asset.source)
    for edit in asset.edits:
        edit(layer)
    target = root / asset.path
    target.parent.mkdir(parents=True, exist_ok=True)
    # The file format follows the extension (".usd" is written as binary crate), as Isaac's own files are.
    if not layer.Export(str(target)):
        raise OSError(f"could not write {target}")


def build_offline_assets(root: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Lay out the offline asset root (every entry of :data:`OFFLINE_TASKS`) and return its path.

    The root is reused when a previous build with the same fingerprint (builder version, files,
    source package versions) is complete, and rebuilt otherwise or when ``force`` is set. The new
    root is assembled in a sibling temporary directory and moved into place, so an interrupted
    build never leaves a half-written root behind.

    Args:
        root: where to build; defaults to :func:`default_asset_root`.
        force: rebuild even if the root is current.

    Raises:
        FileExistsError: if ``root`` is a non-empty directory that this builder did not make
            (it is never deleted).
    """
    root = Path(root).expanduser().resolve() if root is not None else default_asset_root().resolve()
    fingerprint = _fingerprint()
    if not force and _is_current(root, fingerprint):
        logger.debug("offline Isaac Lab assets are current at %s", root)
        return root
    if root.exists() and any(root.iterdir()) and not is_offline_root(root):
        raise FileExistsError(f"{root} is not empty and was not built by diffrl.envs.offline_assets: not replacing it")

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
    try:
        for asset in _all_assets():
            _write_asset(asset, staging)
        (staging / _MARKER).write_text(json.dumps(fingerprint, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        try:
            staging.rename(root)
        except OSError:
            # Another process built the same root concurrently: keep its copy if it is current.
            if not _is_current(root, fingerprint):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built offline Isaac Lab assets (stand-ins for %s) at %s", ", ".join(OFFLINE_TASKS), root)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help=f"default: ${ASSET_ROOT_ENV_VAR} or {default_asset_root()}")
    parser.add_argument("--force", action="store_true", help="rebuild even if the root is current")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = build_offline_assets(args.root, force=args.force)
    for task, assets in OFFLINE_TASKS.items():
        logger.info("%s: %s", task, ", ".join(str(root / asset.path) for asset in assets))


if __name__ == "__main__":
    main()
