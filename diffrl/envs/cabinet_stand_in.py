"""The offline Sektion cabinet of ``Isaac-Open-Drawer-Franka``: an articulation of boxes, authored as USDA text.

Isaac Lab's cabinet task spawns ``Props/Sektion_Cabinet/sektion_cabinet_instanceable.usd`` at
``(0.8, 0, 0.4)``, turned 180 degrees about z so that its front (+x) faces the robot, and addresses:

* the joints ``drawer_top_joint``, ``drawer_bottom_joint`` (the ``drawers`` actuator) and
  ``door_left_joint``, ``door_right_joint`` (the ``doors`` actuator), all four in its initial state;
* the bodies ``sektion`` (the frame transformer's source frame) and ``drawer_handle_top`` (its
  target, offset ``(0.305, 0, 0.01)``, where the handle bar is; also the friction event's body), as
  direct children of the cabinet prim (``{ENV_REGEX_NS}/Cabinet/<body>``);
* the top drawer's joint position and velocity in the observations and rewards (open: > 0.3 m).

No registry package ships that cabinet. :data:`CABINET_USDA` builds one from boxes with the same
names and the same kinematics as the Sektion cabinet's URDF (``sektion_cabinet_2.urdf`` of Isaac
Gym's assets, from which NVIDIA's USD descends): joint origins, axes and limits, the handles fixed
to their drawers at the drawer origin, the knobs fixed to their doors. What differs (also in
:data:`CABINET_NOTE`): the geometry is boxes of assumed size (a solid carcass, drawer fronts without
a tray, a bar handle, door panels and knobs), the masses and inertias are assumed (the URDF gives
none), and the joints carry a drive with the task's own gains (Isaac Lab overwrites them with the
``drawers``/``doors`` actuators anyway) and no joint friction.

Distances are in metres in the cabinet's frame: x forward (out of the front), y left, z up, the
origin 0.4 m above the floor (the task's spawn height).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffrl.envs.asset_conversion import usd_drive_gains

# Joint origins, axes and limits of the Sektion cabinet's URDF (revolute limits in degrees, as USD).
DRAWER_ORIGINS = {"drawer_top": (0.0515, 0.0, 0.3172), "drawer_bottom": (0.0515, 0.0, 0.18795)}
DRAWER_TRAVEL = (0.0, 0.4)
DOOR_ORIGINS = {"door_left_link": (0.3162, -0.3757, -0.12973), "door_right_link": (0.3162, 0.3757, -0.12973)}
DOOR_LIMITS_DEG = {"door_left_link": (-90.0, 0.0), "door_right_link": (0.0, 90.0)}
DOOR_JOINTS = {"door_left_link": "door_left_joint", "door_right_link": "door_right_joint"}
# The task's frame offset of the top handle: the centre of the bar, in the handle body's frame.
HANDLE_GRASP = (0.305, 0.0, 0.01)
# The task's actuator gains (cabinet_env_cfg.CABINET_CFG), authored as the joints' drives.
DRAWER_DRIVE = (10.0, 1.0)
DOOR_DRIVE = (10.0, 2.5)


@dataclass(frozen=True)
class Box:
    """A box collider in its body's frame: centre and full extents [m]."""

    name: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]


@dataclass(frozen=True)
class Body:
    """A rigid body of the cabinet: its origin in the cabinet's frame, mass [kg] and colliders."""

    name: str
    origin: tuple[float, float, float]
    mass: float
    boxes: tuple[Box, ...]

    def _bounds(self) -> tuple[list[float], list[float]]:
        low = [min(b.center[i] - b.size[i] / 2 for b in self.boxes) for i in range(3)]
        high = [max(b.center[i] + b.size[i] / 2 for b in self.boxes) for i in range(3)]
        return low, high

    def center_of_mass(self) -> tuple[float, float, float]:
        """The centre of the colliders' bounding box, in the body's frame."""
        low, high = self._bounds()
        return tuple((lo + hi) / 2 for lo, hi in zip(low, high, strict=True))

    def inertia(self) -> tuple[float, float, float]:
        """Principal inertia [kg m^2] of the mass spread uniformly over the bounding box of the colliders."""
        low, high = self._bounds()
        a, b, c = (hi - lo for lo, hi in zip(low, high, strict=True))
        return (self.mass * (b * b + c * c) / 12, self.mass * (a * a + c * c) / 12, self.mass * (a * a + b * b) / 12)


# The carcass (x -0.3..0.295) ends 0.5 cm behind the drawer fronts and 1 cm behind the doors, so nothing
# overlaps at any joint position; its bottom stays 1 cm above the floor.
_SEKTION = Body("sektion", (0.0, 0.0, 0.0), 20.0, (Box("carcass", (-0.0025, 0.0, 0.0), (0.595, 0.76, 0.78)),))


def _drawer(name: str) -> Body:
    # A front panel (x 0.248..0.268 in the drawer's frame, i.e. 0.2995..0.3195 in the cabinet's) and no tray.
    return Body(name, DRAWER_ORIGINS[name], 1.5, (Box("front", (0.258, 0.0, 0.0), (0.02, 0.72, 0.12)),))


def _handle(drawer: str) -> Body:
    # A bar along y centred on the task's grasp point, on two standoffs from the drawer front.
    x, _, z = HANDLE_GRASP
    boxes = (
        Box("bar", (x, 0.0, z), (0.014, 0.15, 0.02)),
        Box("standoff_left", (0.284, 0.06, z), (0.028, 0.015, 0.01)),
        Box("standoff_right", (0.284, -0.06, z), (0.028, 0.015, 0.01)),
    )
    return Body(drawer.replace("drawer_", "drawer_handle_"), DRAWER_ORIGINS[drawer], 0.1, boxes)


def _door(name: str) -> Body:
    # A panel hanging from its hinge towards the middle (-y for the right door, +y for the left one).
    side = -1.0 if name == "door_right_link" else 1.0
    return Body(name, DOOR_ORIGINS[name], 1.0, (Box("panel", (0.0, side * 0.1847, 0.0), (0.02, 0.365, 0.48)),))


def _knob(door: str) -> Body:
    side = -1.0 if door == "door_right_link" else 1.0
    box = Box("knob", (0.025, side * 0.33, 0.16), (0.03, 0.02, 0.06))
    return Body(door.replace("_link", "_nob_link"), DOOR_ORIGINS[door], 0.05, (box,))


BODIES: tuple[Body, ...] = (
    _SEKTION,
    *(_drawer(d) for d in DRAWER_ORIGINS),
    *(_handle(d) for d in DRAWER_ORIGINS),
    *(_door(d) for d in DOOR_ORIGINS),
    *(_knob(d) for d in DOOR_ORIGINS),
)
"""Every rigid body, the carcass first (the articulation's root, fixed to the world)."""


def _vec(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _body_usda(body: Body) -> str:
    boxes = "".join(
        f"""
        def Cube "{box.name}" (
            prepend apiSchemas = ["PhysicsCollisionAPI"]
        )
        {{
            double size = 1
            double3 xformOp:translate = {_vec(box.center)}
            float3 xformOp:scale = {_vec(box.size)}
            uniform token[] xformOpOrder = ["xformOp:translate", "xformOp:scale"]
        }}
"""
        for box in body.boxes
    )
    return f"""
    def Xform "{body.name}" (
        prepend apiSchemas = ["PhysicsRigidBodyAPI", "PhysicsMassAPI"]
    )
    {{
        float physics:mass = {body.mass:g}
        float3 physics:diagonalInertia = {_vec(body.inertia())}
        point3f physics:centerOfMass = {_vec(body.center_of_mass())}
        double3 xformOp:translate = {_vec(body.origin)}
        uniform token[] xformOpOrder = ["xformOp:translate"]
{boxes}    }}
"""


def _joint_usda(
    kind: str,
    name: str,
    parent: str | None,
    child: Body,
    *,
    axis: str = "X",
    limits: tuple[float, float] | None = None,
    drive: tuple[float, float] | None = None,
) -> str:
    lines = []
    if parent is not None:
        lines.append(f"rel physics:body0 = </cabinet/{parent}>")
        parent_origin = next(b.origin for b in BODIES if b.name == parent)
        local = tuple(c - p for c, p in zip(child.origin, parent_origin, strict=True))
    else:  # to the world: the joint frame is the child's pose in the cabinet's frame
        local = child.origin
    lines += [
        f"rel physics:body1 = </cabinet/{child.name}>",
        f"point3f physics:localPos0 = {_vec(local)}",
        "point3f physics:localPos1 = (0, 0, 0)",
        "quatf physics:localRot0 = (1, 0, 0, 0)",
        "quatf physics:localRot1 = (1, 0, 0, 0)",
    ]
    schemas = ""
    if kind != "PhysicsFixedJoint":
        lines.append(f'uniform token physics:axis = "{axis}"')
    if limits is not None:
        lines += [f"float physics:lowerLimit = {limits[0]:g}", f"float physics:upperLimit = {limits[1]:g}"]
    if drive is not None:
        kind_of_drive = "linear" if kind == "PhysicsPrismaticJoint" else "angular"
        schemas = f'\n        prepend apiSchemas = ["PhysicsDriveAPI:{kind_of_drive}"]\n    '
        stiffness, damping = usd_drive_gains(kind_of_drive, *drive)
        lines += [
            f"float drive:{kind_of_drive}:physics:stiffness = {stiffness!r}",
            f"float drive:{kind_of_drive}:physics:damping = {damping!r}",
            f"float drive:{kind_of_drive}:physics:targetPosition = 0",
            f'uniform token drive:{kind_of_drive}:physics:type = "force"',
        ]
    body = "".join(f"\n            {line}" for line in lines)
    return f"""
        def {kind} "{name}"{f" ({schemas})" if schemas else ""}
        {{{body}
        }}
"""


def _cabinet_usda() -> str:
    bodies = {body.name: body for body in BODIES}
    joints = [_joint_usda("PhysicsFixedJoint", "root_joint", None, bodies["sektion"])]
    for drawer in DRAWER_ORIGINS:
        joints.append(
            _joint_usda(
                "PhysicsPrismaticJoint",
                f"{drawer}_joint",
                "sektion",
                bodies[drawer],
                limits=DRAWER_TRAVEL,
                drive=DRAWER_DRIVE,
            )
        )
        handle = drawer.replace("drawer_", "drawer_handle_")
        joints.append(_joint_usda("PhysicsFixedJoint", f"{handle}_joint", drawer, bodies[handle]))
    for door, joint in DOOR_JOINTS.items():
        joints.append(
            _joint_usda(
                "PhysicsRevoluteJoint",
                joint,
                "sektion",
                bodies[door],
                axis="Z",
                limits=DOOR_LIMITS_DEG[door],
                drive=DOOR_DRIVE,
            )
        )
        knob = door.replace("_link", "_nob_link")
        joints.append(_joint_usda("PhysicsFixedJoint", f"{knob.removesuffix('_link')}_transform", door, bodies[knob]))
    return f"""#usda 1.0
(
    defaultPrim = "cabinet"
    metersPerUnit = 1
    kilogramsPerUnit = 1
    upAxis = "Z"
)

def Xform "cabinet" (
    prepend apiSchemas = ["PhysicsArticulationRootAPI"]
)
{{{"".join(_body_usda(body) for body in BODIES)}
    def Scope "Joints"
    {{{"".join(joints)}    }}
}}
"""


CABINET_USDA = _cabinet_usda()
"""The cabinet stand-in as USDA text (default prim ``cabinet``; bodies are its direct children)."""

CABINET_NOTE = (
    "Sektion cabinet: authored boxes with the Sektion URDF's joints (drawer_top/bottom_joint prismatic along x, "
    "0..0.4 m; door_left/right_joint revolute about z, -90..0 / 0..90 deg) and bodies (sektion fixed to the world, "
    "drawer_handle_top/bottom fixed to their drawers, door knobs): a solid carcass 0.595 x 0.76 x 0.78 m, drawer "
    "fronts without trays, bar handles (0.15 m long at the task's grasp offset 0.305, 0, 0.01), door panels; "
    "masses assumed (carcass 20 kg, drawers 1.5 kg, handles 0.1 kg, doors 1 kg), no joint friction, no meshes"
)
"""How the stand-in differs from NVIDIA's Sektion cabinet (logged with every run that uses it)."""
