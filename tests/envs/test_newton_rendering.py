"""NewtonFrameRenderer: frames of the running Isaac Lab simulation drawn by Newton's viewer offscreen (EGL; Mesa's
software rasterizer on a CPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrl.envs.newton_rendering import NewtonFrameRenderer


def test_frames_show_the_followed_env_moving(cartpole_env):
    env = cartpole_env
    with NewtonFrameRenderer(64, 48) as renderer:
        td = env.reset()
        first = renderer.render()
        assert first.shape == (48, 64, 3) and first.dtype == np.uint8
        again = renderer.render()
        np.testing.assert_array_equal(first, again)  # the same state draws the same picture
        for _ in range(20):  # full push right: cart and pole move
            td["action"] = torch.ones(env.action_spec.shape)
            td = env.step(td)["next"]
        moved = renderer.render()
        assert renderer.frames_rendered == 3
    changed = np.abs(moved.astype(int) - first.astype(int)).max(axis=-1) > 0
    assert changed.mean() > 0.01, changed.mean()
    # Not a blank frame: the robot (grey) stands out of the background.
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 10


def test_the_camera_frames_the_robot(cartpole_env):
    """The robot's pixels lie around the frame's centre (the camera looks at the centre of its bodies)."""
    cartpole_env.reset()
    with NewtonFrameRenderer(64, 48) as renderer:
        frame = renderer.render().astype(int)
    background = np.median(frame.reshape(-1, 3), axis=0)
    rows, cols = np.nonzero(np.abs(frame - background).sum(axis=-1) > 60)
    assert len(rows) > 20
    assert abs(rows.mean() - 24) < 12 and abs(cols.mean() - 32) < 16, (rows.mean(), cols.mean())


def test_bad_arguments_are_clear_errors(cartpole_env):
    with pytest.raises(IndexError, match="env_index 16 is not one of the simulation's 16 envs"):
        NewtonFrameRenderer(64, 48, env_index=16)
    with pytest.raises(ValueError, match="too small"):
        NewtonFrameRenderer(8, 8)


def test_one_process_renders_at_one_size(cartpole_env):
    """Newton's viewer cannot be reopened in a process (a second one draws black frames), so the first size stays."""
    with NewtonFrameRenderer(64, 48):
        pass
    with pytest.raises(RuntimeError, match="renders 64 x 48 frames; one process renders at one size"):
        NewtonFrameRenderer(80, 60)
    with NewtonFrameRenderer(64, 48) as renderer:  # the same size again: the same viewer, still drawing
        assert len(np.unique(renderer.render().reshape(-1, 3), axis=0)) > 10
