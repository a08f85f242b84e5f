"""Evaluate a trained policy: N episodes with the deterministic and with the stochastic policy, and a video.

:func:`evaluate_episodes` runs one episode in each of the env's B copies (so B is the number of
episodes: every copy's *first* episode counts, which does not favour short episodes as
"the first N to finish" would) and reports return and length mean ± std. :func:`run_evaluation`
is what ``recipes/evaluate.py`` calls: load the run, build its env, evaluate each mode, record a
video where the backend renders, write ``evaluation.json`` and log everything to an MLflow child
run of the training run.

Video, one episode per mode, written as a GIF (no ffmpeg needed; MLflow shows it inline):

* gymnasium MuJoCo renders ``rgb_array`` frames through OpenGL (``MUJOCO_GL``: ``egl`` on a GPU
  machine, ``osmesa`` on a CPU one with ``libosmesa6`` installed), in a separate single env;
* Isaac Lab 3.0 renders no ``rgb_array`` frames on a kit-less env, so the first episode of env 0
  of the evaluation itself is drawn by Newton's OpenGL viewer offscreen
  (:class:`~diffrl.envs.newton_rendering.NewtonFrameRenderer`; EGL, in software on a CPU machine).

Where OpenGL cannot be opened the evaluation says why (``video_status``) and goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.deploy.policy_loading import LoadedPolicy, download_policy, load_policy
from diffrl.deploy.tracking import child_run
from diffrl.training.experiment import make_env
from diffrl.training.run_directory import RunDirectory
from diffrl.training.tracking import recorded_run

logger = logging.getLogger("diffrl.deploy")

Mode = Literal["deterministic", "stochastic"]
MODES: tuple[str, ...] = ("deterministic", "stochastic")
_EXPLORATION = {"deterministic": ExplorationType.DETERMINISTIC, "stochastic": ExplorationType.RANDOM}
VIDEO_FRAME_STRIDE = 2
"""Every second step of an episode becomes a video frame."""
VIDEO_MAX_FRAMES = 500
"""A video ends after this many frames (1000 steps), however long its episode."""


@dataclass
class EpisodeStatistics:
    """Returns and lengths of finished episodes of one mode, and their summary."""

    mode: str
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """``<mode>/return_mean``, ``return_std``, ``length_mean``, ``length_std`` and ``episodes``."""
        returns = torch.tensor(self.returns, dtype=torch.float64)
        lengths = torch.tensor(self.lengths, dtype=torch.float64)

        def std(values: torch.Tensor) -> float:
            return float(values.std(correction=0)) if values.numel() else math.nan

        return {
            f"{self.mode}/return_mean": float(returns.mean()) if returns.numel() else math.nan,
            f"{self.mode}/return_std": std(returns),
            f"{self.mode}/length_mean": float(lengths.mean()) if lengths.numel() else math.nan,
            f"{self.mode}/length_std": std(lengths),
            f"{self.mode}/episodes": float(returns.numel()),
        }


def policy_action(policy: LoadedPolicy, observation: torch.Tensor) -> torch.Tensor:
    """The actor's action for raw observations [B, o] → [B, d] (normalized as in training; the
    exploration type in force decides deterministic or stochastic)."""
    td = TensorDict({policy.observation_key: policy.normalize(observation)}, batch_size=observation.shape[:-1])
    return policy.actor(td)["action"]


class EpisodeFrames:
    """The frames of one episode: every ``stride``-th state, at most ``max_frames``, from ``render()``."""

    def __init__(
        self, render: Callable[[], np.ndarray], *, stride: int = VIDEO_FRAME_STRIDE, max_frames: int = VIDEO_MAX_FRAMES
    ):
        if stride < 1 or max_frames < 1:
            raise ValueError(f"stride and max_frames must be >= 1, got {stride} and {max_frames}")
        self._render, self._stride, self._max_frames = render, stride, max_frames
        self._states = 0
        self.frames: list[np.ndarray] = []

    def observe(self) -> None:
        """The episode reached its next state: keep a frame of it if it is one of every ``stride``."""
        if self._states % self._stride == 0 and len(self.frames) < self._max_frames:
            self.frames.append(self._render())
        self._states += 1


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, *, fps: float) -> Path:
    """Write ``frames`` (``[H, W, 3]`` uint8) as a looping GIF played at ``fps``."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to write")
    images = [Image.fromarray(frame) for frame in frames]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0)
    return path


@torch.no_grad()
def evaluate_episodes(
    env: EnvBase,
    policy: LoadedPolicy,
    *,
    mode: Mode,
    max_steps: int = 100_000,
    first_episode_frames: EpisodeFrames | None = None,
) -> EpisodeStatistics:
    """Run the first episode of each of the env's B copies with the ``mode`` policy.

    Args:
        env: a batched TorchRL env (batch size [B]) giving raw observations.
        policy: the loaded policy.
        mode: ``"deterministic"`` (TorchRL's ``DETERMINISTIC`` exploration: zero noise) or ``"stochastic"``.
        max_steps: give up after this many steps (episodes still running are left out, with a warning).
        first_episode_frames: if given, observes every state of copy 0's first episode, from the
            reset to the state before its last step (an auto-resetting env shows the next episode's
            first state after that step).

    Returns:
        The B returns (sums of rewards) and lengths (steps), in the order the copies finished.
    """
    if mode not in _EXPLORATION:
        raise ValueError(f"unknown evaluation mode {mode!r}; choose from {list(MODES)}")
    statistics = EpisodeStatistics(mode)
    (copies,) = env.batch_size
    running_return = torch.zeros(copies, dtype=torch.float64)
    running_length = torch.zeros(copies, dtype=torch.long)
    finished = torch.zeros(copies, dtype=torch.bool)
    td = env.reset()
    if first_episode_frames is not None:
        first_episode_frames.observe()
    with set_exploration_type(_EXPLORATION[mode]):
        for _ in range(max_steps):
            td["action"] = policy_action(policy, td[policy.observation_key].cpu()).to(td.device)
            td, next_td = env.step_and_maybe_reset(td)
            running_return += td["next", "reward"].reshape(copies).double().cpu()
            running_length += 1
            done = td["next", "done"].reshape(copies).cpu()
            if first_episode_frames is not None and not (finished[0] or done[0]):
                first_episode_frames.observe()
            first = done & ~finished
            statistics.returns += running_return[first].tolist()
            statistics.lengths += running_length[first].tolist()
            finished |= done
            running_return[done], running_length[done] = 0.0, 0
            if finished.all():
                break
            td = next_td
    if not finished.all():
        logger.warning("%d of %d episodes did not end within %d steps", int((~finished).sum()), copies, max_steps)
    return statistics


def configure_mujoco_gl() -> str:
    """Choose MuJoCo's OpenGL backend before MuJoCo is imported: ``$MUJOCO_GL`` if set, the display's
    if there is one, else ``egl`` with a GPU and ``osmesa`` without. Returns the choice."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl" if torch.cuda.is_available() else "osmesa"
    return os.environ.get("MUJOCO_GL", "glfw")


@torch.no_grad()
def record_mujoco_video(
    policy: LoadedPolicy,
    path: str | os.PathLike,
    *,
    mode: Mode,
    seed: int = 0,
    max_steps: int = 1000,
    width: int = 320,
    height: int = 240,
    frame_stride: int = VIDEO_FRAME_STRIDE,
) -> Path:
    """Render one episode of the run's gymnasium MuJoCo task with the ``mode`` policy into a GIF.

    Raises whatever the renderer raises when OpenGL is unavailable (see :func:`configure_mujoco_gl`).
    """
    import gymnasium as gym

    env = gym.make(policy.config["env"]["task"], render_mode="rgb_array", width=width, height=height)
    frames = EpisodeFrames(env.render, stride=frame_stride)
    try:
        observation, _ = env.reset(seed=seed)
        with set_exploration_type(_EXPLORATION[mode]):
            for _ in range(max_steps):
                frames.observe()
                obs = torch.as_tensor(observation, dtype=torch.float32).unsqueeze(0)
                action = policy_action(policy, obs).squeeze(0).numpy()
                observation, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
        fps = env.metadata.get("render_fps") or 30
    finally:
        env.close()
    return save_gif(frames.frames, path, fps=fps / frame_stride)


def _video_unavailable_reason(backend: str) -> str | None:
    if backend not in ("mujoco", "isaaclab"):
        return f"no renderer known for backend {backend!r}"
    return None


def _isaaclab_renderer(width: int, height: int) -> tuple[Any, str]:
    """Newton's offscreen renderer of the running Isaac Lab env, or None and why there is none."""
    from diffrl.envs.newton_rendering import NewtonFrameRenderer

    try:
        return NewtonFrameRenderer(width, height), "recorded"
    except RuntimeError as error:
        return None, str(error)


@dataclass
class EvaluationReport:
    """What :func:`run_evaluation` measured and wrote."""

    source: str
    algorithm: str
    task: str
    statistics: dict[str, EpisodeStatistics]
    videos: dict[str, str]
    video_status: str
    output_dir: str
    seed: int
    mlflow_run_id: str | None = None

    def metrics(self) -> dict[str, float]:
        return {key: value for stats in self.statistics.values() for key, value in stats.metrics().items()}

    def as_dict(self) -> dict[str, Any]:
        """What ``evaluation.json`` holds: every field, the episodes and the summary metrics."""
        return {**asdict(self), "metrics": self.metrics()}


def run_evaluation(
    *,
    output_dir: str | os.PathLike,
    source: str | os.PathLike | None = None,
    mlflow_run: str | None = None,
    tracking_uri: str | None = None,
    episodes: int = 10,
    modes: Sequence[Mode] = MODES,
    seed: int = 1000,
    device: str | None = None,
    max_episode_steps: int | None = None,
    video: bool = True,
    video_size: Sequence[int] = (320, 240),
    log_to_mlflow: bool = True,
) -> EvaluationReport:
    """Evaluate a training run's policy in its own env and record it next to the run in MLflow.

    Args:
        output_dir: where ``evaluation.json`` and the videos are written.
        source: a run directory, ``policy.pt`` or checkpoint directory.
        mlflow_run: instead of ``source``, an MLflow run id whose ``policy.pt`` artifact is evaluated.
        tracking_uri: the MLflow store of ``mlflow_run``.
        episodes: episodes per mode, run as that many parallel env copies.
        modes: ``"deterministic"`` and/or ``"stochastic"``.
        seed: the env seed (keep it apart from the training seed).
        device: the env device (default: the run's).
        max_episode_steps: gymnasium time limit (default: the run's; ignored by Isaac Lab).
        video: record one episode per mode where the backend renders.
        video_size: (width, height) of the video frames.
        log_to_mlflow: log metrics, ``evaluation.json`` and videos to a child run of the training run.
    """
    if (source is None) == (mlflow_run is None):
        raise ValueError("give exactly one of source (a run directory or checkpoint) and mlflow_run (a run id)")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise ValueError(f"unknown evaluation mode(s) {unknown or list(modes)}; choose from {list(MODES)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    parent: tuple[str, str] | None
    if mlflow_run is not None:
        if tracking_uri is None:
            raise ValueError("mlflow_run needs tracking_uri (e.g. sqlite:///<run_dir>/mlflow.db)")
        policy = load_policy(download_policy(mlflow_run, tracking_uri, output_dir / "source"))
        parent = (tracking_uri, mlflow_run)
    else:
        policy = load_policy(source)
        parent = recorded_run(RunDirectory(policy.run_dir)) if policy.run_dir is not None else None
    env_cfg = dict(policy.config["env"], num_envs=episodes)
    if device is not None:
        env_cfg["device"] = device
    if max_episode_steps is not None:
        env_cfg["max_episode_steps"] = max_episode_steps

    if not video:
        video_status = "off"
    else:
        video_status = _video_unavailable_reason(env_cfg["backend"]) or "recorded"
        if video_status == "recorded" and env_cfg["backend"] == "mujoco":
            configure_mujoco_gl()  # before make_env imports MuJoCo
    width, height = video_size

    videos: dict[str, str] = {}
    statistics: dict[str, EpisodeStatistics] = {}
    env = make_env(OmegaConf.create(env_cfg), seed)
    renderer = None
    try:
        if video_status == "recorded" and env_cfg["backend"] == "isaaclab":
            renderer, video_status = _isaaclab_renderer(width, height)
        for mode in dict.fromkeys(modes):
            frames = EpisodeFrames(renderer.render) if renderer is not None else None
            statistics[mode] = evaluate_episodes(env, policy, mode=mode, first_episode_frames=frames)
            if frames is not None:
                fps = 1 / (VIDEO_FRAME_STRIDE * env.base_env.unwrapped.step_dt)
                videos[mode] = os.fspath(save_gif(frames.frames, output_dir / f"video_{mode}.gif", fps=fps))
    finally:
        if renderer is not None:
            renderer.close()
        env.close()
    for stats in statistics.values():
        logger.info("%s: %s", stats.mode, {key: round(value, 4) for key, value in stats.metrics().items()})

    if video_status == "recorded" and env_cfg["backend"] == "mujoco":
        try:
            for mode in statistics:
                path = record_mujoco_video(
                    policy,
                    output_dir / f"video_{mode}.gif",
                    mode=mode,
                    seed=seed,
                    max_steps=env_cfg.get("max_episode_steps") or VIDEO_FRAME_STRIDE * VIDEO_MAX_FRAMES,
                    width=width,
                    height=height,
                )
                videos[mode] = os.fspath(path)
        except Exception as error:  # OpenGL backends fail in many ways (missing library, no device)
            video_status = (
                f"MuJoCo could not render with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: "
                f"{type(error).__name__}: {error} (set MUJOCO_GL=egl on a GPU machine, or install libosmesa6)"
            )
    if video_status not in ("recorded", "off"):
        logger.warning("no video: %s", video_status)

    report = EvaluationReport(
        source=os.fspath(policy.source),
        algorithm=policy.algorithm,
        task=env_cfg["task"],
        statistics=statistics,
        videos=videos,
        video_status=video_status,
        output_dir=os.fspath(output_dir),
        seed=seed,
    )
    report_path = output_dir / "evaluation.json"
    report_path.write_text(json.dumps(report.as_dict(), indent=2))  # before MLflow: its failure loses no result
    if log_to_mlflow and parent is not None:
        _log_to_mlflow(parent, report, episodes=episodes, seed=seed)
        report_path.write_text(json.dumps(report.as_dict(), indent=2))  # with the MLflow run's id
    elif log_to_mlflow:
        logger.warning("%s has no run.json: the evaluation is not logged to MLflow", policy.source)
    return report


def _log_to_mlflow(parent: tuple[str, str], report: EvaluationReport, *, episodes: int, seed: int) -> None:
    import mlflow

    with child_run(*parent, "evaluation") as run:
        report.mlflow_run_id = run.info.run_id
        mlflow.log_params({"source": report.source, "episodes": episodes, "seed": seed})
        mlflow.log_metrics({key: value for key, value in report.metrics().items() if math.isfinite(value)})
        mlflow.set_tag("video", report.video_status)
        for path in report.videos.values():
            mlflow.log_artifact(path, artifact_path="videos")
        mlflow.log_dict(report.as_dict(), "evaluation.json")
