"""Robot description files (URDF, MJCF) from registry packages, converted to USD for the offline asset root.

:mod:`diffrl.envs.offline_assets` lays out the offline root; the robots that no installed package
ships as USD come from here, in three steps that are all pinned so a build is reproducible:

1. the source wheel (``genesis-world``, ``playground``) is downloaded once with
   ``pip download --no-deps`` into ``<cache>/wheels`` and only the robot's files are extracted;
2. the robot description is edited as XML (:data:`XmlEdit`: drop visuals, merge links, ...; an MJCF's
   ``<include>`` files are inlined first, so the edits see the whole model);
3. it is converted by NVIDIA's ``urdf-usd-converter`` / ``mujoco-usd-converter`` run in their own
   virtual environment (``<cache>/converters-<hash>``): the MuJoCo converter needs a newer
   ``mujoco`` than Isaac Lab pins, so it cannot live in the training environment.

The result is returned as an in-memory USD layer for the caller's layer edits. ``<cache>`` is
``~/.cache/diffrl/asset_build`` (``$DIFFRL_ASSET_BUILD_CACHE`` if set); it can be deleted at any
time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pxr import Sdf

logger = logging.getLogger("diffrl.envs")

BUILD_CACHE_ENV_VAR = "DIFFRL_ASSET_BUILD_CACHE"

# The converters and every package they pull in, pinned (a fresh machine gets the same converter).
CONVERTER_REQUIREMENTS: tuple[str, ...] = (
    "urdf-usd-converter==0.3.4",
    "mujoco-usd-converter==0.8.0",
    "usd-exchange==3.0.1",
    "mujoco==3.16.0",
    "newton-usd-schemas==0.6.0",
    "numpy==2.5.5",
    "numpy-stl==4.1.1",
    "pycollada==0.9.3",
    "tinyobjloader==2.0.0rc13",
    "absl-py==2.5.1",
    "etils==1.15.0",
    "fsspec==2026.9.0",
    "glfw==2.11.0",
    "PyOpenGL==3.1.10",
    "python-dateutil==4.0.0",
    "python-utils==4.2.0",
    "typing_extensions==4.16.0",
    "tzdata==2026.6",
    "websockets==17.4",
    "zipp==4.1.2",
)

XmlEdit = Callable[[ET.Element], None]


@dataclass(frozen=True)
class WheelFiles:
    """Robot files inside a registry package's wheel, converted to USD.

    Args:
        distribution: the package's name on the registry (``genesis-world``).
        version: the exact version downloaded.
        directory: the folder inside the wheel that holds the robot (extracted whole).
        entry: the URDF or MJCF file, relative to ``directory``.
        kind: ``"urdf"`` or ``"mjcf"`` (which converter runs).
        xml_edits: applied in order to the parsed entry file before conversion.
    """

    distribution: str
    version: str
    directory: str
    entry: str
    kind: Literal["urdf", "mjcf"]
    xml_edits: tuple[XmlEdit, ...] = ()

    def describe(self) -> str:
        return f"{self.distribution}=={self.version}:{self.directory}/{self.entry}"


def build_cache() -> Path:
    """``$DIFFRL_ASSET_BUILD_CACHE`` if set, else ``~/.cache/diffrl/asset_build``."""
    return Path(os.environ.get(BUILD_CACHE_ENV_VAR) or "~/.cache/diffrl/asset_build").expanduser()


def _run(command: Sequence[str | os.PathLike[str]], what: str) -> None:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(map(str, command))}\n{result.stderr}")


def fetch_wheel(distribution: str, version: str, cache: Path) -> Path:
    """The wheel of ``distribution==version``, downloaded once (no dependencies) into ``<cache>/wheels``."""
    wheels = cache / "wheels"
    stem = distribution.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        logger.info("downloading %s==%s (robot files only are used)", distribution, version)
        wheels.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        _run([*pip, "-d", wheels, f"{distribution}=={version}"], f"downloading {distribution}=={version}")
        found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip downloaded no wheel {stem}-{version}-*.whl into {wheels}")
    return found[0]


def converter_pins_key() -> str:
    """A short hash of :data:`CONVERTER_REQUIREMENTS` (names the environment; part of each file's recipe)."""
    return hashlib.sha256("\n".join(CONVERTER_REQUIREMENTS).encode()).hexdigest()[:12]


def converter_environment(cache: Path) -> Path:
    """The ``bin`` folder of a virtual environment holding :data:`CONVERTER_REQUIREMENTS` (made once)."""
    venv = cache / f"converters-{converter_pins_key()}"
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    stamp = venv / ".complete"
    if stamp.is_file():
        return bin_dir
    logger.info("creating the asset converter environment %s (once)", venv)
    # The training venv's interpreter makes the new venv from its base Python (same version).
    _run([sys.executable, "-m", "venv", "--clear", venv], "creating the converter environment")
    _run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", *CONVERTER_REQUIREMENTS],
        "installing the asset converters",
    )
    stamp.write_text("\n".join(CONVERTER_REQUIREMENTS) + "\n")
    return bin_dir


def _extract(wheel: Path, directory: str, dest: Path) -> Path:
    prefix = directory.rstrip("/") + "/"
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith(prefix)]
        if not members:
            raise FileNotFoundError(f"{wheel.name} has no folder {directory}")
        archive.extractall(dest, members)
    return dest / directory


def convert(files: WheelFiles, cache: Path | None = None) -> Sdf.Layer:
    """Fetch, edit and convert ``files``; return the robot as an anonymous, self-contained USD layer."""
    from pxr import Sdf, Usd

    cache = cache if cache is not None else build_cache()
    wheel = fetch_wheel(files.distribution, files.version, cache)
    converters = converter_environment(cache)
    with tempfile.TemporaryDirectory(prefix="diffrl-convert-") as work:
        folder = _extract(wheel, files.directory, Path(work) / "src")
        entry = folder / files.entry
        tree = ET.parse(entry)
        if files.kind == "mjcf":  # the edits see the whole model, not just the entry file
            _inline_mjcf_includes(tree.getroot(), entry.parent)
        for edit in files.xml_edits:
            edit(tree.getroot())
        tree.write(entry)
        out = Path(work) / "usd"
        tool = "urdf_usd_converter" if files.kind == "urdf" else "mujoco_usd_converter"
        command = [converters / tool, "--no-physics-scene", "--no-layer-structure", entry, out]
        if files.kind == "urdf":
            # package://meshes/... URIs resolve against the robot's folder.
            command[1:1] = ["--package", f"meshes={folder / 'meshes'}"]
        _run(command, f"converting {files.describe()}")
        produced = sorted(out.glob("*.usd*"))
        if len(produced) != 1:
            raise RuntimeError(f"{tool} wrote {[p.name for p in produced]} for {files.describe()}, expected one file")
        layer = Sdf.Layer.CreateAnonymous(".usda")
        layer.TransferContent(Usd.Stage.Open(str(produced[0])).Flatten())
    return layer


def _inline_mjcf_includes(root: ET.Element, folder: Path) -> None:
    """Replace every MJCF ``<include file=...>`` by the children of the included file's root (MuJoCo's rule)."""
    for parent in list(root.iter()):
        for index, child in reversed(list(enumerate(parent))):
            if child.tag != "include":
                continue
            included = ET.parse(folder / child.get("file")).getroot()
            _inline_mjcf_includes(included, folder)
            parent.remove(child)
            for offset, element in enumerate(included):
                parent.insert(index + offset, element)


# --- XML edits ------------------------------------------------------------------------------


def drop_elements(*tags: str) -> XmlEdit:
    """XML edit: remove every element with one of ``tags`` (e.g. URDF ``visual``, MJCF ``camera``)."""

    def edit(root: ET.Element) -> None:
        for parent in root.iter():
            for child in [c for c in parent if c.tag in tags]:
                parent.remove(child)

    return edit


def _rpy_is_zero(origin: ET.Element | None) -> bool:
    return origin is None or all(float(v) == 0.0 for v in origin.get("rpy", "0 0 0").split())


def merge_fixed_link(link: str) -> XmlEdit:
    """URDF edit: remove ``link`` and its fixed parent joint; its children attach to its parent.

    The joint into ``link`` must be a pure translation (the compositions stay exact).
    """

    def edit(root: ET.Element) -> None:
        joints = root.findall("joint")
        (into,) = [j for j in joints if j.find("child").get("link") == link]
        if into.get("type") != "fixed" or not _rpy_is_zero(into.find("origin")):
            raise ValueError(f"{link} is not attached by a translation-only fixed joint")
        offset = [float(v) for v in into.find("origin").get("xyz", "0 0 0").split()]
        parent = into.find("parent").get("link")
        for joint in joints:
            if joint.find("parent").get("link") != link:
                continue
            joint.find("parent").set("link", parent)
            origin = joint.find("origin")
            if origin is None:
                origin = ET.SubElement(joint, "origin")
            xyz = [float(v) for v in origin.get("xyz", "0 0 0").split()]
            origin.set("xyz", " ".join(repr(a + b) for a, b in zip(xyz, offset, strict=True)))
        root.remove(into)
        root.remove(next(el for el in root.findall("link") if el.get("name") == link))

    return edit


def drop_link(link: str) -> XmlEdit:
    """URDF edit: remove a leaf ``link`` and the joint into it."""

    def edit(root: ET.Element) -> None:
        root.remove(next(j for j in root.findall("joint") if j.find("child").get("link") == link))
        root.remove(next(el for el in root.findall("link") if el.get("name") == link))

    return edit


def set_joint_limits(limits: dict[str, tuple[float, float]]) -> XmlEdit:
    """URDF edit: set ``lower``/``upper`` of revolute joints whose name ends with a key of ``limits``."""

    def edit(root: ET.Element) -> None:
        matched = 0
        for joint in root.findall("joint"):
            suffix = next((s for s in limits if joint.get("name").endswith(s)), None)
            if suffix is None or joint.get("type") != "revolute":
                continue
            limit = joint.find("limit")
            if limit is None:
                limit = ET.SubElement(joint, "limit", effort="0", velocity="0")
            lower, upper = limits[suffix]
            limit.set("lower", repr(lower))
            limit.set("upper", repr(upper))
            matched += 1
        if not matched:
            raise ValueError(f"no revolute joint ends with any of {sorted(limits)}")

    return edit


def mjcf_collision_only(renames: dict[str, str] | None = None) -> XmlEdit:
    """MJCF edit: keep the kinematics, inertia and collision primitives only.

    Drops meshes (and ``meshdir``), visual geoms (class ``visual``), actuators, sensors, lights,
    cameras and contact exclusions; makes every remaining geom collide (``contype``/``conaffinity``
    1) and renames geoms by ``renames`` (a geom named like a joint would make the converter rename
    the joint).
    """
    renames = renames or {}

    def edit(root: ET.Element) -> None:
        compiler = root.find("compiler")
        if compiler is not None:
            compiler.attrib.pop("meshdir", None)
        for tag in ("actuator", "sensor", "contact", "keyframe"):
            for element in root.findall(tag):
                root.remove(element)
        asset = root.find("asset")
        if asset is not None:
            for mesh in asset.findall("mesh"):
                asset.remove(mesh)
        for parent in root.iter():
            for child in list(parent):
                if child.tag in ("light", "camera") or (child.tag == "geom" and child.get("class") == "visual"):
                    parent.remove(child)
        for default in root.iter("default"):
            for geom in default.findall("geom"):
                if geom.get("type") == "mesh":
                    geom.attrib.pop("type")
        for geom in root.iter("geom"):
            geom.set("contype", "1")
            geom.set("conaffinity", "1")
            if geom.get("name") in renames:
                geom.set("name", renames[geom.get("name")])

    return edit


# --- USD layer edits on converted robots ------------------------------------------------------


def _remove_spec(layer: Sdf.Layer, path: Sdf.Path) -> None:
    spec = layer.GetPrimAtPath(path)
    del spec.nameParent.nameChildren[spec.name]


def flatten_bodies(*, drop_world_joint: bool) -> Callable[[Sdf.Layer], None]:
    """Layer edit: make every rigid body a direct child of the default prim, keeping its world pose.

    Isaac Lab's contact sensors and body-name patterns address ``Robot/<body>``; the converters
    nest bodies as ``Robot/Geometry/<parent>/<child>``. Joint targets follow the moved bodies. With
    ``drop_world_joint`` the joint fixing the base to the world is removed (a floating base).
    """

    def edit(layer: Sdf.Layer) -> None:
        from pxr import Gf, Sdf, Usd, UsdGeom, UsdPhysics

        stage = Usd.Stage.Open(layer)
        root = stage.GetDefaultPrim().GetPath()
        bodies = [p for p in stage.Traverse() if p.HasAPI(UsdPhysics.RigidBodyAPI)]
        cache = UsdGeom.XformCache()
        poses = {p.GetPath(): cache.GetLocalToWorldTransform(p).RemoveScaleShear() for p in bodies}
        moves = {p.GetPath(): root.AppendChild(p.GetName()) for p in bodies}
        if len(set(moves.values())) != len(moves):
            raise ValueError("two rigid bodies share a name: they cannot all become children of the root")
        if drop_world_joint:
            for prim in stage.Traverse():
                joint = UsdPhysics.Joint(prim)
                if joint and not joint.GetBody0Rel().GetTargets():
                    _remove_spec(layer, prim.GetPath())
        # Deepest first: a body leaves its parent before the parent moves.
        for old in sorted(moves, key=lambda p: p.pathElementCount, reverse=True):
            if old != moves[old] and not Sdf.CopySpec(layer, old, layer, moves[old]):
                raise RuntimeError(f"could not move {old}")
            if old != moves[old]:
                _remove_spec(layer, old)

        def remap(path: Sdf.Path) -> Sdf.Path:
            for old in sorted(moves, key=lambda p: p.pathElementCount, reverse=True):
                if path.HasPrefix(old):
                    return path.ReplacePrefix(old, moves[old])
            return path

        stage = Usd.Stage.Open(layer)
        for prim in stage.Traverse():
            for rel in prim.GetRelationships():
                targets = rel.GetTargets()
                if any(remap(t) != t for t in targets):
                    rel.SetTargets([remap(t) for t in targets])
        for old, new in moves.items():
            xform = UsdGeom.Xformable(stage.GetPrimAtPath(new))
            xform.ClearXformOpOrder()
            pose = poses[old]
            xform.AddTranslateOp().Set(Gf.Vec3d(pose.ExtractTranslation()))
            xform.AddOrientOp().Set(Gf.Quatf(pose.ExtractRotationQuat()))

    return edit


def usd_drive_gains(kind: str, stiffness: float, damping: float) -> tuple[float, float]:
    """SI drive gains (N·m/rad and N·m·s/rad for ``kind="angular"``) in the units USD authors them.

    UsdPhysics measures angles in degrees, so an angular drive's stiffness and damping are per
    degree: Newton's and PhysX's importers multiply them by 180/π. Linear gains are unchanged.
    """
    if kind == "linear":
        return stiffness, damping
    if kind == "angular":
        return math.radians(stiffness), math.radians(damping)
    raise ValueError(f"a drive is 'angular' or 'linear', got {kind!r}")


def author_joint_drives(gains: dict[str, tuple[float, float]]) -> Callable[[Sdf.Layer], None]:
    """Layer edit: add angular/linear ``DriveAPI`` to joints named by ``gains``, given in SI units.

    ``gains`` maps a joint name to (stiffness, damping) per radian for a revolute joint and per
    metre for a prismatic one, as Isaac Lab's actuator configs give them (:func:`usd_drive_gains`).
    """

    def edit(layer: Sdf.Layer) -> None:
        from pxr import Usd, UsdPhysics

        stage = Usd.Stage.Open(layer)
        found = set()
        for prim in stage.Traverse():
            if prim.GetName() not in gains:
                continue
            kind = "linear" if prim.IsA(UsdPhysics.PrismaticJoint) else "angular"
            drive = UsdPhysics.DriveAPI.Apply(prim, kind)
            stiffness, damping = usd_drive_gains(kind, *gains[prim.GetName()])
            drive.CreateStiffnessAttr(stiffness)
            drive.CreateDampingAttr(damping)
            drive.CreateTypeAttr("force")
            found.add(prim.GetName())
        if found != set(gains):
            raise ValueError(f"joints not found: {sorted(set(gains) - found)}")

    return edit


def float_single_body(body: str) -> Callable[[Sdf.Layer], None]:
    """Layer edit for a robot of one rigid body (a quadcopter): make ``body`` a floating articulation.

    For a one-link URDF the converter fixes the link to the robot prim by a joint and authors no
    articulation root. This removes every joint into ``body`` whose other side is not a rigid body
    (the base floats) and applies ``PhysicsArticulationRootAPI`` to ``body``, so that Isaac Lab's
    ``Articulation`` finds one root with no joints.
    """

    def edit(layer: Sdf.Layer) -> None:
        from pxr import Usd, UsdPhysics

        stage = Usd.Stage.Open(layer)
        (link,) = [p for p in stage.Traverse() if p.GetName() == body and p.HasAPI(UsdPhysics.RigidBodyAPI)]
        fixing = []
        for prim in stage.Traverse():
            joint = UsdPhysics.Joint(prim)
            if not joint:
                continue
            targets = joint.GetBody0Rel().GetTargets() + joint.GetBody1Rel().GetTargets()
            others = [t for t in targets if t != link.GetPath()]
            if len(others) < len(targets) and not any(
                stage.GetPrimAtPath(t).HasAPI(UsdPhysics.RigidBodyAPI) for t in others
            ):
                fixing.append(prim.GetPath())
        for path in fixing:
            _remove_spec(layer, path)
        UsdPhysics.ArticulationRootAPI.Apply(stage.GetPrimAtPath(link.GetPath()))

    return edit
