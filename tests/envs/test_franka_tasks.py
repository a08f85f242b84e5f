"""The Franka manipulation tasks offline: Lift's concatenated observation groups and Open-Drawer's stand-in cabinet.

The cabinet's USD is checked without a simulator (names, kinematics, no overlapping colliders); the envs
come from the session cache of ``tests/conftest.py`` with the settings of ``tests/envs/test_tasks.py``, so
running both files creates each env once.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from diffrl.envs import cabinet_stand_in as cabinet

NUM_ENVS = 16  # as tests/envs/test_tasks.py: the same cached envs
CONFIG_DIR = Path(__file__).parents[2] / "recipes" / "config"
LIFT_GROUPS = ("policy", "proprio", "perception")  # FrankaPPORunnerCfg.obs_groups, actor and critic alike
LIFT_GROUP_DIMS = (100, 190, 960)


def _compose(recipe: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from diffrl.training.recipe import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=recipe, overrides=overrides)


def test_franka_lift_preset_feeds_the_reference_groups_and_other_presets_the_policy_group():
    assert tuple(_compose("genpo_isaaclab", ["task=franka_lift"]).env.observation_groups) == LIFT_GROUPS
    for preset in ("franka_reach", "franka_open_drawer", "cartpole"):
        assert _compose("genpo_isaaclab", [f"task={preset}"]).env.observation_groups is None, preset


def _cabinet_stage():
    from pxr import Sdf, Usd

    layer = Sdf.Layer.CreateAnonymous(".usda")
    assert layer.ImportFromString(cabinet.CABINET_USDA)
    return Usd.Stage.Open(layer)


def test_cabinet_has_the_sektion_joints_and_bodies_the_task_addresses():
    from pxr import Gf, UsdGeom, UsdPhysics

    stage = _cabinet_stage()
    root = stage.GetDefaultPrim()
    assert root.HasAPI(UsdPhysics.ArticulationRootAPI)
    # Bodies are direct children of the cabinet prim ({ENV_REGEX_NS}/Cabinet/sektion, .../drawer_handle_top).
    bodies = {c.GetName(): c for c in root.GetChildren() if c.HasAPI(UsdPhysics.RigidBodyAPI)}
    assert {"sektion", "drawer_top", "drawer_handle_top", "drawer_bottom", "drawer_handle_bottom"} <= set(bodies)
    assert {"door_left_link", "door_right_link"} <= set(bodies)
    joints = {p.GetName(): p for p in stage.Traverse() if p.IsA(UsdPhysics.Joint)}
    # name -> (type, axis, limits, parent, child): the Sektion URDF's.
    expected = {
        "drawer_top_joint": (UsdPhysics.PrismaticJoint, "X", (0.0, 0.4), "sektion", "drawer_top"),
        "drawer_bottom_joint": (UsdPhysics.PrismaticJoint, "X", (0.0, 0.4), "sektion", "drawer_bottom"),
        "door_left_joint": (UsdPhysics.RevoluteJoint, "Z", (-90.0, 0.0), "sektion", "door_left_link"),
        "door_right_joint": (UsdPhysics.RevoluteJoint, "Z", (0.0, 90.0), "sektion", "door_right_link"),
        "drawer_handle_top_joint": (UsdPhysics.FixedJoint, None, None, "drawer_top", "drawer_handle_top"),
    }
    for name, (kind, axis, limits, parent, child) in expected.items():
        joint = joints[name]
        assert joint.IsA(kind), name
        body0, body1 = (
            UsdPhysics.Joint(joint).GetBody0Rel().GetTargets(),
            UsdPhysics.Joint(joint).GetBody1Rel().GetTargets(),
        )
        assert (body0[0].name, body1[0].name) == (parent, child), name
        if axis is not None:
            assert joint.GetAttribute("physics:axis").Get() == axis, name
            lower, upper = (joint.GetAttribute(f"physics:{k}Limit").Get() for k in ("lower", "upper"))
            assert (lower, upper) == pytest.approx(limits), name
    # The sektion is fixed to the world: a fixed joint with no body0.
    assert any(
        j.IsA(UsdPhysics.FixedJoint) and not UsdPhysics.Joint(j).GetBody0Rel().GetTargets() for j in joints.values()
    )

    cache = UsdGeom.XformCache()
    for joint in joints.values():  # joint frames agree with the bodies' poses (else the solver snaps them)
        api = UsdPhysics.Joint(joint)
        targets = api.GetBody0Rel().GetTargets()
        parent = cache.GetLocalToWorldTransform(stage.GetPrimAtPath(targets[0])) if targets else Gf.Matrix4d(1)
        child = cache.GetLocalToWorldTransform(stage.GetPrimAtPath(api.GetBody1Rel().GetTargets()[0]))
        anchor0 = parent.Transform(Gf.Vec3d(api.GetLocalPos0Attr().Get()))
        anchor1 = child.Transform(Gf.Vec3d(api.GetLocalPos1Attr().Get()))
        assert (anchor0 - anchor1).GetLength() < 1e-6, joint.GetName()

    # The task's handle frame (offset 0.305, 0, 0.01 from drawer_handle_top) is the bar's centre.
    bar = stage.GetPrimAtPath(bodies["drawer_handle_top"].GetPath().AppendChild("bar"))
    assert bar.HasAPI(UsdPhysics.CollisionAPI)
    assert tuple(bar.GetAttribute("xformOp:translate").Get()) == pytest.approx(cabinet.HANDLE_GRASP)


def _collider_bounds(drawer_opening: float) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """Every collider's box in the cabinet's frame with both drawers opened by ``drawer_opening`` m, doors shut."""
    bounds = {}
    for body in cabinet.BODIES:
        shift = drawer_opening if body.name.startswith("drawer") else 0.0
        for box in body.boxes:
            center = [body.origin[i] + box.center[i] + (shift if i == 0 else 0.0) for i in range(3)]
            bounds[body.name, box.name] = (
                [c - s / 2 for c, s in zip(center, box.size, strict=True)],
                [c + s / 2 for c, s in zip(center, box.size, strict=True)],
            )
    return bounds


@pytest.mark.parametrize("opening", [0.0, 0.2, 0.4])
def test_cabinet_colliders_of_different_bodies_never_overlap_along_the_drawer_travel(opening):
    # Overlapping colliders would be pushed apart by the solver from the first step on.
    bounds = _collider_bounds(opening)
    for (a, (low_a, high_a)), (b, (low_b, high_b)) in itertools.combinations(bounds.items(), 2):
        if a[0] == b[0]:
            continue
        overlap = all(low_a[i] < high_b[i] and low_b[i] < high_a[i] for i in range(3))
        assert not overlap, (a, b)
    # The carcass stays above the floor (the task spawns the cabinet's origin 0.4 m up).
    assert bounds["sektion", "carcass"][0][2] > -0.4


def _observation_slice(isaac_env, term: str) -> slice:
    names = isaac_env.observation_manager.active_terms["policy"]
    dims = [shape[-1] for shape in isaac_env.observation_manager.group_obs_term_dim["policy"]]
    start = sum(dims[: names.index(term)])
    return slice(start, start + dims[names.index(term)])


@pytest.mark.slow
def test_drawer_slides_out_under_its_drive_and_the_handle_frame_and_observation_follow(isaaclab_env):
    env = isaaclab_env("Isaac-Open-Drawer-Franka", NUM_ENVS)
    isaac_env = env.base_env.unwrapped
    cabinet_asset = isaac_env.scene["cabinet"]
    drawer = cabinet_asset.find_joints("drawer_top_joint")[0][0]
    env.reset()

    def handle_position() -> torch.Tensor:  # the sensor updates when its ``data`` is read
        return isaac_env.scene["cabinet_frame"].data.target_pos_w.torch[:, 0].clone()

    def physics_steps(count: int) -> None:
        for _ in range(count):
            isaac_env.scene.write_data_to_sim()
            isaac_env.sim.step(render=False)
            isaac_env.scene.update(dt=isaac_env.physics_dt)

    physics_steps(1)
    start = cabinet_asset.data.joint_pos.torch[:, drawer].clone()
    handle_start = handle_position()
    # The drawers actuator (stiffness 10, damping 1) pulls the drawer towards an 8 cm target. Physics is
    # stepped without the action manager and the arm held at its reset pose, clear of the drawer's first
    # ~13 cm (reset targets are 0, which would swing the arm into the handle).
    robot = isaac_env.scene["robot"]
    robot.actuators.target_command.set_position_index(value=robot.data.joint_pos.torch.clone())
    command = cabinet_asset.actuators.target_command
    command.set_position_index(value=torch.full((NUM_ENVS, 1), 0.08), joint_ids=[drawer])
    try:
        physics_steps(300)  # 0.5 s
        observation = isaac_env.observation_manager.compute()["policy"]
        position = cabinet_asset.data.joint_pos.torch[:, drawer].clone()
        moved = handle_position() - handle_start
    finally:  # the env is shared: leave it as the next test expects it
        command.set_position_index(value=torch.zeros(NUM_ENVS, 1), joint_ids=[drawer])
        env.reset()
    opening = position - start
    assert (opening > 0.04).all() and (position <= 0.08 * 2).all(), position
    # The cabinet faces -x in the world (turned 180 deg about z): the handle moves by the opening along -x.
    torch.testing.assert_close(-moved[:, 0], opening, atol=2e-3, rtol=0)
    torch.testing.assert_close(moved[:, 1:], torch.zeros(NUM_ENVS, 2), atol=2e-3, rtol=0)
    # The policy observes the drawer's joint position (relative to its default, 0).
    observed = observation[:, _observation_slice(isaac_env, "cabinet_joint_pos")]
    torch.testing.assert_close(observed[:, 0], position, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_the_stand_in_arm_has_the_legacy_panda_gains_in_si_units(isaaclab_env):
    # Open-Drawer leaves the arm's stiffness to the USD (its damping is the task's 80). USD authors an
    # angular drive per degree: authored as 80 "per degree", the arm came out 57x stiffer (4583.7
    # N·m/rad), and GenPO's large early actions on Franka Reach drove the simulation to NaN.
    robot = isaaclab_env("Isaac-Open-Drawer-Franka", NUM_ENVS).base_env.unwrapped.scene["robot"]
    arm, _ = robot.find_joints("panda_joint.*")
    fingers, _ = robot.find_joints("panda_finger_joint.*")
    stiffness = robot.data.joint_stiffness.torch
    torch.testing.assert_close(stiffness[:, arm], torch.full((NUM_ENVS, 7), 80.0))  # N·m/rad
    torch.testing.assert_close(stiffness[:, fingers], torch.full((NUM_ENVS, 2), 2e3))  # N/m


@pytest.mark.slow
def test_lift_observation_is_the_reference_groups_concatenated_in_order(isaaclab_env):
    env = isaaclab_env("Isaac-Lift-Franka", NUM_ENVS, observation_groups=LIFT_GROUPS)
    assert env.observation_spec["observation"].shape == (NUM_ENVS, sum(LIFT_GROUP_DIMS))
    assert not set(LIFT_GROUPS) & set(env.observation_spec.keys())  # the groups are not carried twice
    groups = env.base_env.reset()  # the wrapper's own output, group by group
    assert tuple(groups[g].shape[-1] for g in LIFT_GROUPS) == LIFT_GROUP_DIMS
    observation = env.transform(groups.clone())["observation"]
    torch.testing.assert_close(observation, torch.cat([groups[g] for g in LIFT_GROUPS], dim=-1), rtol=0, atol=0)


@pytest.mark.slow
def test_unknown_observation_group_names_the_task_s_groups_and_leaves_no_simulation_open(isaaclab_env):
    with pytest.raises(ValueError, match=r"\['policy'\]") as error:
        isaaclab_env("Isaac-Cartpole", NUM_ENVS, observation_groups=("policy", "critic"))
    assert "critic" in str(error.value)
    env = isaaclab_env("Isaac-Cartpole", NUM_ENVS)  # a new simulation can start: the failed one was closed
    assert env.observation_spec["observation"].shape == (NUM_ENVS, 4)
