"""Diffrl-Quadcopter-Direct: the stand-in body, and the physics of thrust, moments, observations and rewards.

The simulator tests step the Isaac Lab env underneath the TorchRL wrapper (``env.base_env.unwrapped``,
a ``DirectRLEnv``) with hand-made actions and compare what happens with Newtonian mechanics worked
out here: hover thrust holds the height, no thrust is free fall, a body moment spins the body at
``M / I``, the angular speed is capped. The env comes from the session cache of ``tests/conftest.py`` (16 envs, the size
``tests/envs/test_tasks.py`` also uses, so both files share one env).
"""

from __future__ import annotations

import math

import pytest
import torch

TASK = "Diffrl-Quadcopter-Direct"
NUM_ENVS = 16
G = 9.81  # Isaac Lab's default gravity [m/s^2]
MASS = 0.027  # the cf2x URDF's mass [kg]
INERTIA = (1.4e-5, 1.4e-5, 2.17e-5)  # the cf2x URDF's principal moments of inertia [kg m^2]
PHYSICS_DT = 0.01
STEP_DT = 0.02
START_HEIGHT = 0.5


def _rotation_matrix_xyzw(q: torch.Tensor) -> torch.Tensor:
    """Body-to-world rotation matrices [B, 3, 3] of unit quaternions [B, 4] in Isaac Lab 3.0's (x, y, z, w) order."""
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        (
            torch.stack((1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)), -1),
            torch.stack((2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)), -1),
            torch.stack((2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)), -1),
        ),
        -2,
    )


@pytest.fixture
def quadcopter(isaaclab_env):
    """The Isaac Lab env, freshly reset, with every episode counter at 0 (no time-out during a test)."""
    env = isaaclab_env(TASK, NUM_ENVS)
    isaac = env.base_env.unwrapped
    isaac.reset()
    isaac.episode_length_buf.zero_()  # a full reset spreads the counters over the episode
    return isaac


def _step(isaac, action: list[float], steps: int):
    actions = torch.tensor(action, device=isaac.device).expand(isaac.num_envs, 4)
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = isaac.step(actions)
    return obs["policy"], reward, terminated, truncated


def _position(isaac) -> torch.Tensor:
    return isaac.scene["robot"].data.root_pos_w.torch - isaac.scene.env_origins


@pytest.mark.slow
def test_robot_mass_and_thrust_scale_are_the_crazyflie_s(quadcopter):
    assert quadcopter.scene["robot"].body_names == ["body"]
    assert quadcopter.robot_mass == pytest.approx(MASS, rel=1e-6)
    assert quadcopter.robot_weight == pytest.approx(MASS * G, rel=1e-6)
    assert quadcopter.step_dt == pytest.approx(STEP_DT) and quadcopter.max_episode_length == 500


@pytest.mark.slow
def test_observation_at_rest_is_level_with_the_goal_relative_to_the_body(quadcopter):
    obs = quadcopter.reset()[0]["policy"]  # the first observation of new episodes
    assert obs.shape == (NUM_ENVS, 12)
    torch.testing.assert_close(obs[:, :6], torch.zeros(NUM_ENVS, 6), atol=1e-6, rtol=0)  # at rest
    torch.testing.assert_close(obs[:, 6:9], torch.tensor([0.0, 0.0, -1.0]).expand(NUM_ENVS, 3), atol=1e-6, rtol=0)
    position = _position(quadcopter)
    torch.testing.assert_close(position, torch.tensor([0.0, 0.0, START_HEIGHT]).expand(NUM_ENVS, 3))
    # Identity orientation: the goal in the body frame is the goal minus the position.
    goal = quadcopter.desired_pos_w - quadcopter.scene.env_origins
    torch.testing.assert_close(obs[:, 9:12], goal - position, atol=1e-5, rtol=0)
    # Goals are drawn in a 4 m x 4 m square around the env origin at 0.5-1.5 m (16 envs: not all equal).
    assert (goal[:, :2].abs() <= 2.0).all() and ((goal[:, 2] >= 0.5) & (goal[:, 2] <= 1.5)).all()
    assert goal[:, 0].std() > 0.1


@pytest.mark.slow
def test_hover_thrust_holds_the_height(quadcopter):
    # thrust = 1.9 m g (a0 + 1) / 2 equals the weight for a0 = 2 / 1.9 - 1.
    obs, _, terminated, truncated = _step(quadcopter, [2 / 1.9 - 1, 0.0, 0.0, 0.0], steps=20)
    assert not (terminated | truncated).any()
    # Without the thrust the body would have fallen g t^2 / 2 = 0.78 m in these 0.4 s.
    torch.testing.assert_close(_position(quadcopter), torch.tensor([0.0, 0.0, START_HEIGHT]).expand(NUM_ENVS, 3))
    torch.testing.assert_close(obs[:, :6], torch.zeros(NUM_ENVS, 6), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_without_thrust_the_body_falls_freely(quadcopter):
    steps = 10
    obs, _, terminated, _ = _step(quadcopter, [-1.0, 0.0, 0.0, 0.0], steps=steps)
    assert not terminated.any()
    t = steps * STEP_DT
    drop = START_HEIGHT - _position(quadcopter)[:, 2]
    # Exact free fall drops g t^2 / 2 = 0.196 m; MuJoCo's semi-implicit integrator (velocity first,
    # then position) drops g dt^2 k (k + 1) / 2 = 0.206 m in its k = 20 physics steps of dt.
    k = steps * round(STEP_DT / PHYSICS_DT)
    torch.testing.assert_close(drop, torch.full((NUM_ENVS,), G * PHYSICS_DT**2 * k * (k + 1) / 2), rtol=1e-3, atol=0)
    assert (drop > G * t**2 / 2).all()
    torch.testing.assert_close(obs[:, 2], torch.full((NUM_ENVS,), -G * t), rtol=0.01, atol=0)  # body z = world z
    torch.testing.assert_close(_position(quadcopter)[:, :2], torch.zeros(NUM_ENVS, 2), atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("axis", [0, 1, 2], ids=["roll", "pitch", "yaw"])
def test_body_moment_spins_the_body_at_moment_over_inertia(quadcopter, axis):
    steps = 5
    action = [2 / 1.9 - 1, 0.0, 0.0, 0.0]
    action[1 + axis] = 0.3
    obs, _, terminated, _ = _step(quadcopter, action, steps=steps)
    assert not terminated.any()
    # M = 0.01 a N m about one body axis: w = M t / I about it (one axis: no gyroscopic coupling).
    expected = torch.zeros(NUM_ENVS, 3)
    expected[:, axis] = 0.01 * 0.3 * steps * STEP_DT / INERTIA[axis]
    torch.testing.assert_close(obs[:, 3:6], expected, rtol=0.02, atol=1e-3)
    robot = quadcopter.scene["robot"].data
    rotation = _rotation_matrix_xyzw(robot.root_quat_w.torch)
    # Turned by more than 0.5 rad (alpha t^2 / 2 = 0.7-1.1 rad): the trace of R is 1 + 2 cos(angle).
    assert (rotation.diagonal(dim1=1, dim2=2).sum(-1) < 1 + 2 * math.cos(0.5)).all()
    # The body-frame gravity and goal are the world ones rotated by R^T.
    gravity_b = rotation.transpose(1, 2) @ torch.tensor([0.0, 0.0, -1.0])
    goal_b = (rotation.transpose(1, 2) @ (quadcopter.desired_pos_w - robot.root_pos_w.torch).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(obs[:, 6:9], gravity_b, atol=1e-5, rtol=0)
    torch.testing.assert_close(obs[:, 9:12], goal_b, atol=1e-5, rtol=0)
    # The thrust turns with the body: a roll (about +x) pushes towards -y, a pitch (about +y) towards +x.
    velocity_w = robot.root_lin_vel_w.torch
    if axis == 0:
        assert (velocity_w[:, 1] < -0.1).all() and (velocity_w[:, 0].abs() < 1e-3).all()
    elif axis == 1:
        assert (velocity_w[:, 0] > 0.1).all() and (velocity_w[:, 1].abs() < 1e-3).all()
    else:
        torch.testing.assert_close(velocity_w, torch.zeros(NUM_ENVS, 3), atol=1e-3, rtol=0)


@pytest.mark.slow
def test_angular_speed_is_capped_at_physx_s_limit(quadcopter):
    """A saturated yaw moment for 0.6 s would spin the body to M t / I = 276 rad/s; the cap (PhysX's 100 rad/s,
    applied before each physics step) holds it within one physics step's gain, M dt / I = 4.6 rad/s, of 100."""
    obs, _, terminated, _ = _step(quadcopter, [2 / 1.9 - 1, 0.0, 0.0, 1.0], steps=30)
    assert not terminated.any()
    speed = obs[:, 3:6].norm(dim=-1)
    assert (speed > 99.0).all() and (speed <= 100.0 + 0.01 * PHYSICS_DT / INERTIA[2] + 1e-3).all(), speed
    assert torch.isfinite(obs).all()


@pytest.mark.slow
def test_reward_is_the_distance_shaping_minus_velocity_penalties(quadcopter):
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        actions = torch.rand(NUM_ENVS, 4, generator=generator) * 2 - 1
        obs, reward, terminated, truncated, _ = quadcopter.step(actions)
        obs = obs["policy"]
        alive = ~(terminated | truncated)  # reset envs observe their new episode
        lin_vel, ang_vel, goal_b = obs[:, 0:3], obs[:, 3:6], obs[:, 9:12]
        expected = (
            15.0 * (1 - torch.tanh(goal_b.norm(dim=1) / 0.8))
            - 0.05 * lin_vel.square().sum(1)
            - 0.01 * ang_vel.square().sum(1)
        ) * STEP_DT
        assert torch.isfinite(reward).all()
        torch.testing.assert_close(reward[alive], expected[alive], rtol=1e-4, atol=1e-6)
        assert alive.any()


@pytest.mark.slow
def test_falling_below_10_cm_terminates_and_restarts_the_episode(quadcopter):
    # Free fall from 0.5 m passes 0.1 m after sqrt(2 * 0.4 / g) = 0.286 s, in env step 15 (0.28-0.30 s).
    falling = torch.tensor([-1.0, 0.0, 0.0, 0.0]).expand(NUM_ENVS, 4)
    first = torch.full((NUM_ENVS,), -1)
    for step in range(1, 21):
        obs, _, terminated, truncated, _ = quadcopter.step(falling)
        obs = obs["policy"]
        assert not truncated.any()
        first[(first < 0) & terminated] = step
        if step == 15:
            # The terminated envs restarted at rest, 0.5 m up.
            torch.testing.assert_close(obs[terminated, :3], torch.zeros(int(terminated.sum()), 3))
            assert (_position(quadcopter)[terminated, 2] - START_HEIGHT).abs().max() < 1e-5
    assert (first == 15).all(), first


def test_stand_in_is_one_floating_rigid_body_with_the_urdf_s_mass(tmp_path):
    from pxr import Usd, UsdPhysics

    from diffrl.envs.offline_assets import CRAZYFLIE, OFFLINE_TASKS, build_offline_assets

    root = build_offline_assets(tmp_path / "root", tasks=[TASK])
    assert CRAZYFLIE in OFFLINE_TASKS[TASK]
    stage = Usd.Stage.Open(str(root / CRAZYFLIE.path))
    robot = stage.GetDefaultPrim()
    bodies = [p for p in stage.Traverse() if p.HasAPI(UsdPhysics.RigidBodyAPI)]
    # One body, named as in NVIDIA's cf2x.usd, a direct child of the robot prim, and the root of
    # its articulation; no joint at all (none fixes it to the world: it floats).
    assert [p.GetPath() for p in bodies] == [robot.GetPath().AppendChild("body")]
    (body,) = bodies
    assert body.HasAPI(UsdPhysics.ArticulationRootAPI)
    assert not [p for p in stage.Traverse() if p.IsA(UsdPhysics.Joint)]
    mass = UsdPhysics.MassAPI(body)
    assert mass.GetMassAttr().Get() == pytest.approx(MASS)
    assert tuple(mass.GetDiagonalInertiaAttr().Get()) == pytest.approx(INERTIA)
    assert [c.GetTypeName() for c in body.GetChildren() if c.HasAPI(UsdPhysics.CollisionAPI)] == ["Cylinder"]
