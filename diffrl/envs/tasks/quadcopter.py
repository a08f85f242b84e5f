"""``Diffrl-Quadcopter-Direct``: fly a Crazyflie to a goal point (Isaac Lab 2.x's Quadcopter task, for 3.0).

Isaac Lab 3.0 removed ``Isaac-Quadcopter-Direct``; this is a fresh 3.0 direct-workflow env that
follows the 2.x task's published design (``isaaclab_tasks/direct/quadcopter``, Isaac Lab 2.x):

* action (d = 4, clipped to [-1, 1]): collective thrust ``thrust_to_weight * m * g * (a0 + 1) / 2``
  along the body z axis plus body moments ``moment_scale * a[1:]`` [N m], applied to the body at
  its centre of mass on every physics step (the permanent wrench composer, body frame);
* observation (12): body-frame linear and angular velocity, gravity direction in the body frame,
  the goal position in the body frame;
* reward per step: ``(15 (1 - tanh(d / 0.8)) - 0.05 |v|^2 - 0.01 |w|^2) * step_dt`` with d the
  distance to the goal, v and w the body-frame linear and angular velocities;
* termination when the height leaves [0.1, 2.0] m; time-out after 10 s (500 steps of 0.02 s);
* on reset the body starts at rest 0.5 m above its env origin, level, and a new goal is drawn
  uniformly in a 4 m x 4 m square around the origin at a height in [0.5, 1.5] m.

Differences from 2.x: physics runs on Newton (MuJoCo-Warp), the propellers are not spun (2.x spins
them for show; the thrust is applied to the body either way), and a time-out comes after exactly
``episode_length_s`` (Isaac Lab 3.0's convention, one step later than 2.x). The robot is Isaac Lab's
``CRAZYFLIE_CFG`` (NVIDIA's ``Robots/Bitcraze/Crazyflie/cf2x.usd``); offline it is diffrl's stand-in
converted from genesis-world's ``cf2x.urdf`` (one body, mass 0.027 kg, see
:mod:`diffrl.envs.offline_assets`). The mass used for the thrust is read from the simulation.

Make it like any Isaac Lab task::

    from diffrl.envs.isaaclab import make_isaaclab_env

    env = make_isaaclab_env("Diffrl-Quadcopter-Direct", num_envs=16, device="cpu")
    rollout = env.rollout(24, break_when_any_done=False)  # rollout["observation"]: [16, 24, 12]
    env.close()

Import this module only after :func:`diffrl.envs.isaaclab.resolve_isaaclab_assets` (the robot's
USD path is read from ``isaaclab.utils.assets.ISAAC_NUCLEUS_DIR`` when it is imported); the
gymnasium entry points of :mod:`diffrl.envs.tasks` do that lazily.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import warp as wp
from isaaclab.assets import Articulation, ArticulationCfg
from isaaclab.envs import DirectRLEnv, DirectRLEnvCfg
from isaaclab.scene import InteractiveSceneCfg
from isaaclab.sim import SimulationCfg
from isaaclab.sim.spawners.materials import RigidBodyMaterialBaseCfg
from isaaclab.terrains import TerrainImporterCfg
from isaaclab.utils import configclass, replace
from isaaclab.utils.math import subtract_frame_transforms
from isaaclab_assets.robots.quadcopter import CRAZYFLIE_CFG
from isaaclab_newton.physics import MJWarpSolverCfg, NewtonCfg

# 2.x's ground and default material (its "multiply" combine modes are PhysX settings, not Newton's).
_MATERIAL = RigidBodyMaterialBaseCfg(static_friction=1.0, dynamic_friction=1.0, restitution=0.0)


@configclass
class QuadcopterSceneCfg(InteractiveSceneCfg):
    """A ground plane and one Crazyflie per env."""

    terrain = TerrainImporterCfg(
        prim_path="/World/ground",
        terrain_type="plane",
        collision_group=-1,
        physics_material=_MATERIAL,
        debug_vis=False,
    )
    # Isaac Lab's Crazyflie without the propeller spin of its initial state: the thrust does not
    # depend on it, and the stand-in has no propeller joints (no joint pattern must be required to
    # match; joints start at 0 either way).
    robot: ArticulationCfg = replace(
        CRAZYFLIE_CFG,
        prim_path="{ENV_REGEX_NS}/Robot",
        init_state=ArticulationCfg.InitialStateCfg(pos=(0.0, 0.0, 0.5), joint_pos={}, joint_vel={}),
    )


@configclass
class QuadcopterEnvCfg(DirectRLEnvCfg):
    """Isaac Lab 2.x's ``QuadcopterEnvCfg`` settings, on Newton."""

    # env
    episode_length_s = 10.0
    decimation = 2
    action_space = 4
    observation_space = 12
    state_space = 0

    # simulation: 100 Hz physics, 50 Hz control; contact buffers per env for the one cylinder on the ground
    sim: SimulationCfg = SimulationCfg(
        dt=1 / 100,
        render_interval=decimation,
        physics_material=_MATERIAL,
        physics=NewtonCfg(
            solver_cfg=MJWarpSolverCfg(njmax=32, nconmax=8, cone="pyramidal", impratio=1, integrator="implicitfast"),
            num_substeps=1,
            debug_mode=False,
        ),
    )

    # scene
    scene: QuadcopterSceneCfg = QuadcopterSceneCfg(
        num_envs=4096, env_spacing=2.5, replicate_physics=True, clone_in_fabric=True
    )

    # robot
    body_name: str = "body"
    thrust_to_weight: float = 1.9
    moment_scale: float = 0.01  # [N m] per unit action
    # The body's angular speed is capped here after every physics step, as PhysX caps every rigid body at its
    # maxAngularVelocity (USD default 5729.58 deg/s = 100 rad/s), which 2.x ran under. Newton has no such cap, and
    # a saturated moment (714 rad/s^2 about x) otherwise spins the Crazyflie until the integrator diverges.
    max_angular_velocity: float = 100.0  # [rad/s]

    # goal, relative to the env origin [m]
    goal_xy_range: tuple[float, float] = (-2.0, 2.0)
    goal_height_range: tuple[float, float] = (0.5, 1.5)

    # termination: the height must stay in this range [m]
    height_range: tuple[float, float] = (0.1, 2.0)

    # reward scales
    lin_vel_reward_scale: float = -0.05
    ang_vel_reward_scale: float = -0.01
    distance_to_goal_reward_scale: float = 15.0
    distance_to_goal_length: float = 0.8  # [m], of the 1 - tanh(d / length) shaping


class QuadcopterEnv(DirectRLEnv):
    """Fly to a goal point with collective thrust and body moments (see the module docstring).

    Buffers: ``_actions`` [B, 4] (clipped), ``_thrust`` and ``_moment`` [B, 1, 3] (body frame),
    ``_desired_pos_w`` [B, 3] (world frame).
    """

    cfg: QuadcopterEnvCfg

    def __init__(self, cfg: QuadcopterEnvCfg, render_mode: str | None = None, **kwargs):
        super().__init__(cfg, render_mode, **kwargs)
        self._robot: Articulation = self.scene["robot"]
        self._body_id, _ = self._robot.find_bodies(self.cfg.body_name)
        self._actions = torch.zeros(self.num_envs, self.cfg.action_space, device=self.device)
        self._thrust = torch.zeros(self.num_envs, 1, 3, device=self.device)
        self._moment = torch.zeros(self.num_envs, 1, 3, device=self.device)
        self._desired_pos_w = torch.zeros(self.num_envs, 3, device=self.device)
        # Mass of every body of the robot (propellers included where the asset has them), as simulated.
        self.robot_mass = float(self._robot.data.body_mass.torch[0].sum())
        gravity = torch.tensor(self.sim.cfg.gravity, device=self.device).norm()
        self.robot_weight = float(self.robot_mass * gravity)
        self._episode_sums = {
            key: torch.zeros(self.num_envs, device=self.device) for key in ("lin_vel", "ang_vel", "distance_to_goal")
        }

    @property
    def desired_pos_w(self) -> torch.Tensor:
        """The goal positions in the world frame, [B, 3] (a view: do not write)."""
        return self._desired_pos_w

    def _pre_physics_step(self, actions: torch.Tensor) -> None:
        self._actions = actions.clone().clamp(-1.0, 1.0)
        self._thrust[:, 0, 2] = self.cfg.thrust_to_weight * self.robot_weight * (self._actions[:, 0] + 1.0) / 2.0
        self._moment[:, 0, :] = self.cfg.moment_scale * self._actions[:, 1:]

    def _apply_action(self) -> None:
        self._limit_angular_velocity()
        self._robot.permanent_wrench_composer.set_forces_and_torques_index(
            forces=self._thrust, torques=self._moment, body_ids=self._body_id, is_global=False
        )

    def _limit_angular_velocity(self) -> None:
        """Scale a body's angular velocity down to ``max_angular_velocity`` where it is above (PhysX's cap).

        Device ops and a mask, no host sync: only the envs over the cap are written (the mask write is
        also the one Isaac Lab's graphed pipelines accept).
        """
        velocity = self._robot.data.root_com_vel_w.torch  # what write_root_velocity sets: the centre of mass's
        angular = velocity[:, 3:]
        speed = torch.linalg.vector_norm(angular, dim=-1, keepdim=True)
        scale = torch.clamp(self.cfg.max_angular_velocity / speed.clamp_min(1e-12), max=1.0)
        self._robot.write_root_velocity_to_sim_mask(
            root_velocity=torch.cat((velocity[:, :3], angular * scale), dim=-1),
            env_mask=wp.from_torch(scale.squeeze(-1) < 1.0),
        )

    def _get_observations(self) -> dict:
        data = self._robot.data
        desired_pos_b, _ = subtract_frame_transforms(data.root_pos_w.torch, data.root_quat_w.torch, self._desired_pos_w)
        obs = torch.cat(
            (data.root_lin_vel_b.torch, data.root_ang_vel_b.torch, data.projected_gravity_b.torch, desired_pos_b),
            dim=-1,
        )
        return {"policy": obs}

    def _get_rewards(self) -> torch.Tensor:
        data = self._robot.data
        lin_vel = torch.sum(torch.square(data.root_lin_vel_b.torch), dim=1)
        ang_vel = torch.sum(torch.square(data.root_ang_vel_b.torch), dim=1)
        distance = torch.linalg.norm(self._desired_pos_w - data.root_pos_w.torch, dim=1)
        rewards = {
            "lin_vel": lin_vel * self.cfg.lin_vel_reward_scale * self.step_dt,
            "ang_vel": ang_vel * self.cfg.ang_vel_reward_scale * self.step_dt,
            "distance_to_goal": (1.0 - torch.tanh(distance / self.cfg.distance_to_goal_length))
            * self.cfg.distance_to_goal_reward_scale
            * self.step_dt,
        }
        for key, value in rewards.items():
            self._episode_sums[key] += value
        return torch.stack(list(rewards.values())).sum(dim=0)

    def _get_dones(self) -> tuple[torch.Tensor, torch.Tensor]:
        time_out = self.episode_length_buf >= self.max_episode_length
        height = self._robot.data.root_pos_w.torch[:, 2]
        low, high = self.cfg.height_range
        died = (height < low) | (height > high)
        return died, time_out

    def _reset_idx(self, env_ids: Sequence[int] | torch.Tensor | None) -> None:
        if env_ids is None or len(env_ids) == self.num_envs:
            env_ids = self._robot._ALL_INDICES
        env_ids = torch.as_tensor(env_ids, device=self.device, dtype=torch.long)

        # Episode statistics of the finished episodes (tensors: no host sync).
        data = self._robot.data
        log = self.extras.setdefault("log", {})
        log["Metrics/final_distance_to_goal"] = torch.linalg.norm(
            self._desired_pos_w[env_ids] - data.root_pos_w.torch[env_ids], dim=1
        ).mean()
        for key, sums in self._episode_sums.items():
            log[f"Episode_Reward/{key}"] = sums[env_ids].mean() / self.max_episode_length_s
            sums[env_ids] = 0.0
        log["Episode_Termination/died"] = self.reset_terminated[env_ids].sum()
        log["Episode_Termination/time_out"] = self.reset_time_outs[env_ids].sum()

        super()._reset_idx(env_ids)
        if len(env_ids) == self.num_envs:
            # Spread the first time-outs so that the envs do not all reset on the same step (as 2.x).
            self.episode_length_buf = torch.randint_like(self.episode_length_buf, high=int(self.max_episode_length))

        self._actions[env_ids] = 0.0
        n = len(env_ids)
        goal = torch.empty(n, 3, device=self.device)
        goal[:, :2].uniform_(*self.cfg.goal_xy_range)
        goal[:, 2].uniform_(*self.cfg.goal_height_range)
        goal[:, :2] += self.scene.env_origins[env_ids, :2]
        self._desired_pos_w[env_ids] = goal

        root_pose = data.default_root_pose.torch[env_ids].clone()
        root_pose[:, :3] += self.scene.env_origins[env_ids]
        root_vel = data.default_root_vel.torch[env_ids].clone()
        self._robot.write_root_pose_to_sim_index(root_pose=root_pose, env_ids=env_ids)
        self._robot.write_root_velocity_to_sim_index(root_velocity=root_vel, env_ids=env_ids)
        if self._robot.num_joints > 0:
            self._robot.write_joint_position_to_sim_index(
                position=data.default_joint_pos.torch[env_ids].clone(), env_ids=env_ids
            )
            self._robot.write_joint_velocity_to_sim_index(
                velocity=data.default_joint_vel.torch[env_ids].clone(), env_ids=env_ids
            )
