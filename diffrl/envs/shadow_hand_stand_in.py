"""The offline Shadow Hand of ``Isaac-Reorient-Cube-Shadow``: the OpenAI hand MJCF of ``gymnasium-robotics``, renamed.

Isaac Lab 3.0's Shadow Hand (``ShadowHandMultiPhysics_v0/right_hand/right_hand.usda``, MuJoCo
variant on Newton) has 24 ``rh_`` joints; 16 are driven one motor each, and the middle and distal
joints of the four fingers (``J2``, ``J1``) share one tendon motor each, ``rh_FFJ0 = rh_FFJ2 +
rh_FFJ1`` (``isaaclab_assets.robots.shadow_hand``). No registry package ships that hand. The
closest is the Shadow hand of OpenAI's in-hand manipulation tasks, shipped in ``gymnasium-robotics``
(``envs/assets/hand``): the same kinematic tree with joints numbered one lower (``FFJ0`` is the
distal joint, ``WRJ0`` the wrist's second joint), primitive colliders, masses and inertias.

:func:`shadow_hand_mjcf` turns it into the task's hand before conversion:

* joints ``robot0:<X>J<n>`` become ``rh_<X>J<n+1>`` (all 24, axes and ranges kept) and bodies
  ``robot0:<b>`` become ``rh_<b>`` (fingertips ``rh_ffdistal`` ... ``rh_thdistal``);
* the forearm is the world-welded root, oriented so that with the task's root pose the palm lies
  horizontal, facing up, fingers reaching along -Y, under the cube's spawn point;
* OpenAI's tendons and joint actuators are replaced by Isaac's scheme: one fixed tendon per finger,
  ``rh_<X>J0 = rh_<X>J2 + rh_<X>J1``, driven by a MuJoCo position actuator (``kp`` 0.5, control
  range [0, 3.1415], force range +-1), which Isaac Lab's MJWarp tendon control commands;
* visual geoms, meshes (the forearm's mesh collider included), materials, sites, sensors and the
  scene around the hand are dropped. OpenAI lets hand geoms touch each other only in 18 listed
  pairs, through ``contype``/``conaffinity`` masks (Newton keeps MuJoCo's masks only for a model it
  loaded from MJCF itself, not for this USD scene): every collider gets both masks 1 and every other
  pair of hand bodies a contact exclude (``physics:filteredPairs``).
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

from diffrl.envs.asset_conversion import XmlEdit

GYMNASIUM_ROBOTICS = ("gymnasium-robotics", "1.4.2")
ASSET_DIRECTORY = "gymnasium_robotics/envs/assets"
ENTRY = "hand/reach.xml"

FINGERS = ("FF", "MF", "RF", "LF")
TENDON_KP = 0.5
TENDON_CTRL_RANGE = (0.0, 3.1415)
TENDON_FORCE_RANGE = (-1.0, 1.0)
# Where the forearm (the root body) sits in the robot's frame. The task turns the robot -90 deg about z
# and spawns the cube 0.39 m along -Y and 0.1 m above the robot's origin: the palm's centre, 0.33 m
# along the OpenAI forearm, lands 0.06 + 0.33 m along +x here (-Y after the turn), its face up (+z).
FOREARM_POS = (0.06, 0.0, 0.0)
# wxyz: forearm x -> -y, y -> -z (the palm's normal, -y in the hand, becomes +z), z (fingers) -> +x.
FOREARM_QUAT = (0.5, -0.5, 0.5, -0.5)

_OPENAI_JOINT = re.compile(r"robot0:([A-Z]{2})J(\d)$")


def isaac_joint_name(openai_name: str) -> str:
    """``robot0:FFJ0`` -> ``rh_FFJ1``: OpenAI numbers each finger's joints from 0, Shadow (and Isaac) from 1."""
    match = _OPENAI_JOINT.match(openai_name)
    if match is None:
        raise ValueError(f"not an OpenAI hand joint name: {openai_name}")
    return f"rh_{match[1]}J{int(match[2]) + 1}"


def _isaac_body_name(openai_name: str) -> str:
    return "rh_" + openai_name.removeprefix("robot0:")


def _fmt(values: tuple[float, ...]) -> str:
    return " ".join(repr(float(v)) for v in values)


def shadow_hand_mjcf() -> XmlEdit:
    """MJCF edit of ``hand/reach.xml`` (includes inlined): the hand the task addresses (module docstring)."""

    def edit(root: ET.Element) -> None:
        root.set("model", "right_hand")  # names the robot's root prim
        worldbody = root.find("worldbody")
        (mount,) = [b for b in worldbody.findall("body") if b.get("name") == "robot0:hand mount"]
        forearm = mount.find("body")
        for child in list(worldbody):
            worldbody.remove(child)
        worldbody.append(forearm)
        forearm.attrib.pop("euler", None)
        forearm.set("pos", _fmt(FOREARM_POS))
        forearm.set("quat", _fmt(FOREARM_QUAT))

        # OpenAI's hand-hand contact pairs, by body, before anything is renamed.
        geom_body = {g.get("name"): b.get("name") for b in forearm.iter("body") for g in b.findall("geom")}
        allowed = {frozenset((geom_body[p.get("geom1")], geom_body[p.get("geom2")])) for p in root.iter("pair")}
        for tag in ("asset", "contact", "tendon", "actuator", "sensor", "size", "visual", "keyframe", "equality"):
            for element in root.findall(tag):
                root.remove(element)
        compiler = root.find("compiler")
        if compiler is not None:
            compiler.attrib.pop("meshdir", None)
            compiler.attrib.pop("texturedir", None)

        for parent in root.iter():
            for child in list(parent):
                visual = child.tag == "geom" and (
                    child.get("type") == "mesh" or child.get("name", "").startswith("robot0:V_")
                )
                if visual or child.tag in ("site", "light", "camera"):
                    parent.remove(child)
        for element in root.iter():
            for attribute in ("material", "user"):
                element.attrib.pop(attribute, None)
        for default in root.iter("default"):
            for geom in default.findall("geom"):
                geom.attrib.pop("type", None)
        for geom in forearm.iter("geom"):
            geom.set("contype", "1")
            geom.set("conaffinity", "1")

        for joint in forearm.iter("joint"):
            joint.set("name", isaac_joint_name(joint.get("name")))
        colliding = []
        for body in forearm.iter("body"):
            if body.findall("geom"):
                colliding.append(body.get("name"))
            body.set("name", _isaac_body_name(body.get("name")))

        contact = ET.SubElement(root, "contact")
        for first, second in itertools.combinations(colliding, 2):
            if frozenset((first, second)) not in allowed:
                ET.SubElement(contact, "exclude", body1=_isaac_body_name(first), body2=_isaac_body_name(second))

        tendons = ET.SubElement(root, "tendon")
        actuators = ET.SubElement(root, "actuator")
        for finger in FINGERS:
            fixed = ET.SubElement(tendons, "fixed", name=f"rh_{finger}J0")
            for n in (2, 1):
                ET.SubElement(fixed, "joint", joint=f"rh_{finger}J{n}", coef="1")
            ET.SubElement(
                actuators,
                "position",
                name=f"rh_A_{finger}J0",
                tendon=f"rh_{finger}J0",
                kp=repr(TENDON_KP),
                ctrllimited="true",
                ctrlrange=_fmt(TENDON_CTRL_RANGE),
                forcelimited="true",
                forcerange=_fmt(TENDON_FORCE_RANGE),
            )

    return edit


# The DexCube the task spawns in the hand and as its goal marker. NVIDIA's is a textured, instanceable
# mesh cube; this one is a 6 cm collision cube of the OpenAI block's density.
CUBE_EDGE_M = 0.06
CUBE_DENSITY = 567.0
DEX_CUBE_USDA = f"""#usda 1.0
(
    defaultPrim = "DexCube"
    metersPerUnit = 1
    kilogramsPerUnit = 1
    upAxis = "Z"
)

def Xform "DexCube" (
    prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsMassAPI"]
)
{{
    float physics:density = {CUBE_DENSITY}

    def Cube "collision" (
        prepend apiSchemas = ["PhysicsCollisionAPI"]
    )
    {{
        double size = {CUBE_EDGE_M}
    }}
}}
"""
