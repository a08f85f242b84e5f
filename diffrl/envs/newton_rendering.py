"""Frames of a running Isaac Lab 3.0 env, rendered offscreen by Newton's OpenGL viewer.

Isaac Lab 3.0's ``render()`` returns no ``rgb_array`` frames on a kit-less Newton env; its
visualizers (Kit, Newton GL) are interactive windows. :class:`NewtonFrameRenderer` instead points
Newton's own viewer (``newton.viewer.ViewerGL``, the renderer behind Isaac Lab's ``newton``
visualizer) at the simulation's Newton model and current state, and reads each rendered frame
back as an ``[H, W, 3]`` uint8 array::

    env = make_isaaclab_env("Isaac-Ant", 4)
    renderer = NewtonFrameRenderer(width=320, height=240)    # follows env 0
    td = env.reset()
    frames = [renderer.render()]
    ...                                                     # env.step(...), renderer.render()
    renderer.close()

Without a display (``DISPLAY`` unset, Linux) pyglet runs headless on EGL: on a GPU machine through
the NVIDIA driver, on a CPU one through Mesa's software rasterizer (Debian/Ubuntu packages
``libegl1 libegl-mesa0 libgl1-mesa-dri``; ``docs/deploy.md``). The headless switch must be set
before pyglet opens its window module, so build the renderer before anything else imports
``newton.viewer`` or ``pyglet.window`` (diffrl's envs, built with visualizer ``none``, do not).

Bodies are drawn with their visual shapes; where a body has none (the offline stand-ins keep
colliders only, :mod:`diffrl.envs.offline_assets`), collision shapes are drawn too. Only one env
is drawn (``env_index``): the camera looks at the centre of its bodies from a fixed
direction, at a distance set once from the robot's size at the first frame, and follows that
centre, so a walking robot stays in view. Run as a module it writes one picture of a task
(``python -m diffrl.envs.newton_rendering Isaac-Ant ant.png``), as docs/tasks.md's pictures were.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HEADLESS_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri"
"""Debian/Ubuntu packages that give pyglet an EGL context without a display (software on a CPU)."""


def _use_headless_gl() -> None:
    """Ask pyglet for its EGL headless window when there is no display (Linux); an error if too late."""
    if sys.platform != "linux" or os.environ.get("DISPLAY"):
        return
    import pyglet

    if pyglet.options.get("headless"):
        return
    if "pyglet.window" in sys.modules:
        raise RuntimeError(
            "pyglet's window module was imported before the headless switch was set, and there is no display: "
            "create the NewtonFrameRenderer before importing newton.viewer or pyglet.window"
        )
    pyglet.options["headless"] = True


# The process's one Newton viewer and its frame size: after a ViewerGL is closed, a new one in the same process
# renders black frames (seen with pyglet 2.1's headless EGL windows), so one viewer is opened on first use and kept
# until the process ends.
_viewer: Any = None
_viewer_size: tuple[int, int] | None = None


def _process_viewer(width: int, height: int) -> Any:
    global _viewer, _viewer_size
    if _viewer is None:
        _use_headless_gl()
        try:
            from newton.viewer import ViewerGL

            _viewer = ViewerGL(width=width, height=height, vsync=False, headless=True)
            _viewer_size = (width, height)
        except Exception as error:  # pyglet/EGL fail in many ways: no library, no device, no config
            raise RuntimeError(
                f"Newton's OpenGL viewer could not start ({type(error).__name__}: {error}); without a display it "
                f"needs EGL (on Debian/Ubuntu: apt-get install {HEADLESS_PACKAGES})"
            ) from error
    if _viewer_size != (width, height):
        raise RuntimeError(
            f"this process's Newton viewer renders {_viewer_size[0]} x {_viewer_size[1]} frames; "
            f"one process renders at one size (asked for {width} x {height})"
        )
    return _viewer


class NewtonFrameRenderer:
    """Renders env ``env_index`` of the running Isaac Lab (Newton) simulation into RGB frames.

    Args:
        width: frame width in pixels.
        height: frame height in pixels.
        env_index: the env (Newton world) drawn and followed.
        distance_scale: the camera stands ``distance_scale`` times the robot's radius (how far its
            shapes reach from the centre of its bodies, at the first frame) plus 0.3 m away.
        pitch_deg: the view's elevation (negative: looking down).
        yaw_deg: the view's heading in the ground plane, counter-clockwise from +x (the default,
            -135, looks along (-1, -1): the camera sits towards +x, +y of the robot).

    Raises:
        RuntimeError: if no Isaac Lab simulation with a Newton model is running in this process, if
            OpenGL cannot be opened (the message names the packages a headless Linux machine needs),
            or if an earlier renderer of this process used another frame size (the process keeps one
            viewer: a second one renders black frames).
        IndexError: if ``env_index`` is not one of the simulation's envs.
    """

    def __init__(
        self,
        width: int = 320,
        height: int = 240,
        *,
        env_index: int = 0,
        distance_scale: float = 2.5,
        pitch_deg: float = -20.0,
        yaw_deg: float = -135.0,
    ):
        if width < 16 or height < 16:
            raise ValueError(f"frames of {width} x {height} pixels are too small; use at least 16 x 16")
        from isaaclab_newton.physics.newton_manager import NewtonManager

        model = NewtonManager.get_model()
        if model is None:
            raise RuntimeError("no Isaac Lab simulation on Newton is running: create the env before its renderer")
        if not 0 <= env_index < model.world_count:
            raise IndexError(f"env_index {env_index} is not one of the simulation's {model.world_count} envs")
        self._manager = NewtonManager
        self._bodies = np.flatnonzero(model.body_world.numpy() == env_index)
        self._body_reach = self._body_reach_of(model)
        self._framed = self._framed_bodies(model)
        self._distance_scale = distance_scale
        self._pitch_deg, self._yaw_deg = pitch_deg, yaw_deg
        self._distance: float | None = None
        self._viewer = _process_viewer(width, height)
        self._viewer.show_collision = self._needs_collision_shapes(model)
        self._viewer.set_model(model)
        self._viewer.set_visible_worlds([env_index])
        self._viewer.set_world_offsets((0.0, 0.0, 0.0))  # the scene already places each env; no extra grid
        self._frames = 0

    def _body_reach_of(self, model: Any) -> np.ndarray:
        """Per env body, how far its shapes reach from its origin (shape offset + bounding radius) [m]."""
        shape_body = model.shape_body.numpy()
        offsets = np.linalg.norm(model.shape_transform.numpy()[:, :3], axis=1)
        reach = offsets + model.shape_collision_radius.numpy()
        per_body = np.zeros(len(self._bodies))
        for index, body in enumerate(self._bodies):
            shapes = reach[shape_body == body]
            per_body[index] = shapes[shapes < 1e5].max(initial=0.0)  # planes report an "infinite" radius
        return per_body

    def _framed_bodies(self, model: Any) -> np.ndarray:
        """Which env bodies the camera frames: those with shapes that move (not welded to the world).

        A body without shapes (an invisible root, a knuckle frame) or a fixed base (Cartpole's 8 m rail,
        the Shadow Hand's forearm) would pull the framing off the part of the robot that moves.
        """
        import newton

        welded = (model.joint_parent.numpy() == -1) & (model.joint_type.numpy() == int(newton.JointType.FIXED))
        fixed_bodies = np.isin(self._bodies, model.joint_child.numpy()[welded])
        framed = (self._body_reach > 0) & ~fixed_bodies
        return framed if framed.any() else np.ones(len(self._bodies), bool)

    def _needs_collision_shapes(self, model: Any) -> bool:
        """Whether a body of the env has no visual shape (the offline stand-ins keep colliders only)."""
        import newton

        visible = (model.shape_flags.numpy() & int(newton.ShapeFlags.VISIBLE)) != 0
        drawn_bodies = set(model.shape_body.numpy()[visible].tolist())
        return not set(self._bodies.tolist()) <= drawn_bodies

    @property
    def frames_rendered(self) -> int:
        return self._frames

    def render(self) -> np.ndarray:
        """The current simulation state of the env, seen by the following camera: ``[H, W, 3]`` uint8."""
        state = self._manager.get_state_0()
        self._aim(state.body_q.numpy()[self._bodies[self._framed], :3])
        viewer = self._viewer
        viewer.begin_frame(self._frames * 1e-2)  # the viewer's clock drives nothing we draw
        viewer.log_state(state)
        viewer.end_frame()
        self._frames += 1
        return viewer.get_frame().numpy()

    def _aim(self, positions: np.ndarray) -> None:
        if not len(positions):  # a scene of static shapes only: look at the origin from 1 m's distance
            positions, reach = np.zeros((1, 3)), np.ones(1)
        else:
            reach = self._body_reach[self._framed]
        centre = positions.mean(axis=0)
        if self._distance is None:  # set once, from the robot's size at the first frame
            radius = float((np.linalg.norm(positions - centre, axis=1) + reach).max())
            self._distance = self._distance_scale * radius + 0.3
        pitch, yaw = math.radians(self._pitch_deg), math.radians(self._yaw_deg)
        # Z up (Isaac Lab's convention): the view direction for this pitch and yaw, and the eye behind it.
        front = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
        eye = centre - self._distance * front
        self._viewer.set_camera(tuple(float(x) for x in eye), self._pitch_deg, self._yaw_deg)

    def close(self) -> None:
        """Detach from the simulation; the process's viewer stays open for the next renderer (see above)."""
        self._viewer.set_model(None)

    def __enter__(self) -> NewtonFrameRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write one rendered frame of an Isaac Lab task (offline stand-ins).")
    parser.add_argument("task", help="task id, e.g. Isaac-Ant or Diffrl-Quadcopter-Direct")
    parser.add_argument("output", type=Path, help="the PNG to write")
    parser.add_argument("--steps", type=int, default=30, help="steps with zero actions before the picture")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 320), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--yaw", type=float, default=-135.0, help="view heading, degrees from +x")
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from diffrl.envs.isaaclab import make_isaaclab_env

    env = make_isaaclab_env(args.task, 2, device="cpu")
    try:
        with NewtonFrameRenderer(*args.size, yaw_deg=args.yaw) as renderer:
            td = env.reset()
            for _ in range(args.steps):
                td["action"] = torch.zeros(env.action_spec.shape)
                td = env.step(td)["next"]
            Image.fromarray(renderer.render()).save(args.output)
    finally:
        env.close()
    print(args.output)


if __name__ == "__main__":
    _main()
