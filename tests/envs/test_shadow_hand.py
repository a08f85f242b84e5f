"""The offline Shadow Hand of Isaac-Reorient-Cube-Shadow: the joints, tendons and cube behave as the task expects.

The stand-in (:mod:`diffrl.envs.shadow_hand_stand_in`) drives 16 joints directly and the middle and
distal joints of each finger through one tendon, ``rh_<F>J0 = rh_<F>J2 + rh_<F>J1``, as Isaac Lab's
asset does. Actions are position targets mapped onto each joint's (tendon's) range; the tests command the start
pose (all joints at 0 rad: a flat hand, palm up) and move one joint or tendon. An env whose cube
falls off is reset by the task (new joint positions), so joint checks use the envs that were not.
16 CPU envs, offline assets, from the session cache (the same env as ``test_tasks.py``'s).
"""

from __future__ import annotations

import pytest
import torch

TASK = "Isaac-Reorient-Cube-Shadow"
NUM_ENVS = 16
FINGERS = ("FF", "MF", "RF", "LF")


@pytest.fixture
def hand(isaaclab_env):
    return isaaclab_env(TASK, NUM_ENVS)


def _torch(array) -> torch.Tensor:
    return array.torch if hasattr(array, "torch") else array


def _action_index(env) -> dict[str, int]:
    """Action column of every joint and tendon the policy commands, by name."""
    manager = env.base_env.unwrapped.action_manager
    joint_term, tendon_term = (manager.get_term(name) for name in ("joint_pos", "tendon_pos"))
    names = list(joint_term._joint_names) + list(tendon_term._tendon_names)
    assert manager.active_terms == ["joint_pos", "tendon_pos"] and len(names) == manager.total_action_dim == 20
    return {name: column for column, name in enumerate(names)}


def _hold(env, action: torch.Tensor, steps: int, td=None) -> list:
    """Step ``steps`` times with a constant action from ``td`` (a fresh reset if None); every step's output."""
    out = []
    td = env.reset() if td is None else td
    for _ in range(steps):
        td = env.step(td.set("action", action.clone()))["next"]
        out.append(td)
    return out


def _never_done(steps: list) -> torch.Tensor:
    """[B] bool: the envs that neither finished nor were reset during ``steps``."""
    return ~torch.stack([td["done"].squeeze(-1) for td in steps]).any(0)


def _joint_pos(env) -> dict[str, torch.Tensor]:
    robot = env.base_env.unwrapped.scene["robot"]
    q = _torch(robot.data.joint_pos)
    return {name: q[:, i].clone() for i, name in enumerate(robot.joint_names)}


# Isaac Lab 3.0's names (isaaclab_assets.robots.shadow_hand), restated: the 16 directly driven joints,
# the tendon-driven pair of each finger, the tendons and the fingertips.
DIRECT_JOINTS = {"rh_WRJ2", "rh_WRJ1"} | {f"rh_{f}J{n}" for f in ("FF", "MF", "RF") for n in (4, 3)}
DIRECT_JOINTS |= {"rh_LFJ5", "rh_LFJ4", "rh_LFJ3"} | {f"rh_THJ{n}" for n in range(1, 6)}
TENDON_JOINTS = {f"rh_{f}J{n}" for f in FINGERS for n in (2, 1)}
FINGERTIPS = {f"rh_{f}distal" for f in ("ff", "mf", "rf", "lf", "th")}


def test_the_converted_hand_has_isaac_s_joints_tendons_and_fingertips(tmp_path):
    from pxr import Usd, UsdPhysics

    from diffrl.envs.offline_assets import SHADOW_HAND, build_offline_assets

    root = build_offline_assets(tmp_path / "root", tasks=[TASK])
    stage = Usd.Stage.Open(str(root / SHADOW_HAND.path))
    prims = {p.GetName(): p for p in stage.Traverse()}
    joints = {name for name, p in prims.items() if p.IsA(UsdPhysics.RevoluteJoint)}
    assert joints == DIRECT_JOINTS | TENDON_JOINTS and len(joints) == 24
    assert FINGERTIPS <= {name for name, p in prims.items() if p.HasAPI(UsdPhysics.RigidBodyAPI)}
    assert not any(prims[name].HasAPI(UsdPhysics.DriveAPI) for name in joints)  # gains: the task's own
    for finger in FINGERS:  # rh_<F>J0 = 1 * rh_<F>J2 + 1 * rh_<F>J1, driven by one position actuator
        tendon = prims[f"rh_{finger}J0"]
        assert tendon.GetTypeName() == "MjcTendon"
        assert sorted(t.name for t in tendon.GetRelationship("mjc:path").GetTargets()) == [
            f"rh_{finger}J1",
            f"rh_{finger}J2",
        ]
        assert list(tendon.GetAttribute("mjc:path:coef").Get()) == [1.0, 1.0]
        actuator = prims[f"rh_A_{finger}J0"]
        assert actuator.GetTypeName() == "MjcActuator"
        assert actuator.GetRelationship("mjc:target").GetTargets() == [tendon.GetPath()]
        assert actuator.GetAttribute("mjc:ctrlRange:max").Get() == pytest.approx(3.1415)

    # OpenAI's hand touches itself only in its listed pairs: the palm and the thumb's proximal link
    # (which overlap at rest) are filtered; the thumb's and the index finger's tips are not.
    def filtered(a: str, b: str) -> bool:
        targets = {x: UsdPhysics.FilteredPairsAPI(prims[x]).GetFilteredPairsRel().GetTargets() for x in (a, b)}
        return b in {t.name for t in targets[a]} or a in {t.name for t in targets[b]}

    assert filtered("rh_palm", "rh_thproximal") and not filtered("rh_ffdistal", "rh_thdistal")


def _start_pose_action(env) -> torch.Tensor:
    """The action whose targets are the start pose: every joint at 0 rad (a flat hand), tendons at 0."""
    manager = env.base_env.unwrapped.action_manager
    joint_term = manager.get_term("joint_pos")
    robot = env.base_env.unwrapped.scene["robot"]
    lower, upper = _torch(robot.data.soft_joint_pos_limits)[:, joint_term._joint_ids].unbind(-1)
    action = torch.full((NUM_ENVS, 20), -1.0)  # the tendon columns: the bottom of [0, 3.1415]
    action[:, :16] = 2 * (0.0 - lower) / (upper - lower) - 1
    return action


@pytest.mark.slow
def test_the_flat_hand_holds_the_cube_on_its_palm_with_finite_steps(hand):
    # The cube spawns 10 cm above the hand's root; it drops onto the palm, which faces up, and stays.
    scene = hand.base_env.unwrapped.scene
    robot, cube = scene["robot"], scene["object"]

    def cube_on_palm(max_speed: float) -> torch.Tensor:
        palm = _torch(robot.data.body_pos_w)[:, robot.body_names.index("rh_palm")]
        cube_pos = _torch(cube.data.root_pos_w)
        # The 6 cm cube lies on the palm (its centre 3 cm above the palm's surface), near the palm's
        # centre, at rest.
        height = cube_pos[:, 2] - palm[:, 2]
        near = torch.linalg.norm(cube_pos[:, :2] - palm[:, :2], dim=1) < 0.1
        slow = _torch(cube.data.root_lin_vel_w).norm(dim=1) < max_speed
        return (height > 0.03) & (height < 0.06) & near & slow

    flat = _start_pose_action(hand)
    landed = _hold(hand, flat, 20)
    assert cube_on_palm(max_speed=0.3).all() and _never_done(landed).all()  # landed, maybe still sliding
    steps = landed + _hold(hand, flat, 80, landed[-1])
    for td in steps:
        assert torch.isfinite(td["observation"]).all() and torch.isfinite(td["reward"]).all()
    # The thumb (0 rad) lies a centimetre above the palm's surface under one edge of the cube: a few
    # cubes slide off the flat hand; most stay where they landed.
    kept = _never_done(steps)
    assert kept.sum() >= 12 and cube_on_palm(max_speed=0.05)[kept].all(), kept  # at rest


@pytest.mark.slow
def test_a_joint_target_moves_that_joint_and_no_other(hand):
    column = _action_index(hand)
    flat = _start_pose_action(hand)
    settled = _hold(hand, flat, 20)
    before = _joint_pos(hand)
    action = flat.clone()
    action[:, column["rh_FFJ3"]] = 1.0  # target: the upper limit (pi/2), the index finger's knuckle bent
    steps = _hold(hand, action, 30, settled[-1])
    after = _joint_pos(hand)
    kept = _never_done(settled + steps)
    assert kept.sum() >= 8
    assert (before["rh_FFJ3"][kept].abs() < 0.15).all() and (after["rh_FFJ3"][kept] > 1.2).all(), after["rh_FFJ3"]
    direct = [name for name in column if name != "rh_FFJ3" and not name.endswith("J0")]
    moved = {name: (after[name] - before[name])[kept].abs().max().item() for name in direct}
    assert max(moved.values()) < 0.1, moved


@pytest.mark.slow
def test_a_tendon_drives_its_middle_and_distal_joints_together(hand):
    # Isaac's scheme: rh_FFJ0 = rh_FFJ2 + rh_FFJ1 is one motor; neither joint has a drive of its own.
    robot = hand.base_env.unwrapped.scene["robot"]
    stiffness = _torch(robot.data.joint_stiffness)
    for finger in FINGERS:
        for n in (1, 2):
            assert (stiffness[:, robot.joint_names.index(f"rh_{finger}J{n}")] == 0).all()
    column = _action_index(hand)
    flat = _start_pose_action(hand)
    settled = _hold(hand, flat, 20)
    before = _joint_pos(hand)
    action = flat.clone()
    action[:, column["rh_FFJ0"]] = 1.0  # tendon target 3.1415: both joints bend, up to their pi/2 limits
    steps = _hold(hand, action, 30, settled[-1])
    after = _joint_pos(hand)
    kept = _never_done(settled + steps)
    assert kept.sum() >= 8
    before, after = ({name: q[kept] for name, q in pose.items()} for pose in (before, after))
    for n in (1, 2):
        assert (before[f"rh_FFJ{n}"].abs() < 0.15).all() and (after[f"rh_FFJ{n}"] > 1.0).all(), after[f"rh_FFJ{n}"]
    assert (after["rh_FFJ1"] + after["rh_FFJ2"] > 2.5).all()
    # The other fingers' tendons kept their targets: their joints stay straight.
    for finger in ("MF", "RF", "LF"):
        for n in (1, 2):
            assert (after[f"rh_{finger}J{n}"] - before[f"rh_{finger}J{n}"]).abs().max() < 0.1, (finger, n)
