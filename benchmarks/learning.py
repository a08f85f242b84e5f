"""Learning curves at equal frame budgets: GenPO, TruDi, diffrl's Gaussian PPO and rsl_rl PPO.

Every (task, algorithm, seed) is one subprocess, launched with the one command a user would type:

- diffrl (``genpo``, ``trudi``, ``ppo``): ``python recipes/<algo>_isaaclab.py task=... seed=...
  env.num_envs=... collector.total_frames=... logger.progress=false hydra.run.dir=<case dir>``;
  the curve is read back from the run's MLflow store (``episode_return``, the mean return of the
  last 100 finished episodes, against ``frames``);
- ``rsl_rl`` on Isaac Lab: ``isaaclab train --rl_library rsl_rl --task ... --seed ...
  agent.max_iterations=...`` with the task's reference runner config (the frame budget set
  through the iteration count); the curve is parsed from its per-iteration console report
  ("Total steps", "Mean reward": also the mean over the last 100 episodes);
- ``rsl_rl`` on gymnasium MuJoCo: ``benchmarks/rsl_rl_gym.py``, rsl_rl's ``OnPolicyRunner``
  over a gymnasium vector env (Isaac Lab's ``isaaclab train`` has no MuJoCo tasks).

Within a task every algorithm gets the same envs, rollout length and frame budget, so the
curves are sampled at the same frames; they are still interpolated onto one grid before
seeds are averaged. Each finished case leaves ``case.json`` in its directory
(``<out>/<task>/<algorithm>/seed<k>/``); ``--resume`` skips those and continues a diffrl case
that was stopped mid-run from its latest checkpoint (the recipe's ``resume=``), so a long sweep can
be stopped and continued at any point. Without ``--resume`` every case starts over in an emptied
directory. Cases run one at a time with one torch/OpenMP thread.

    python benchmarks/learning.py --quick                         # one tiny MuJoCo case, ~1 min
    python benchmarks/learning.py --resume --json learning.json   # the full sweep (docs/results.md)
    python benchmarks/learning.py --task cartpole --algorithms genpo --seeds 0 1 2 --resume
    python benchmarks/learning.py --task presets --algorithms genpo ppo --seeds 0 --resume   # docs/tasks.md
    python benchmarks/learning.py --task cartpole --algorithms trudi --seeds 0 \
        --variant trudi_K4 trudi algorithm.actor.num_steps=4            # a hyperparameter sweep
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import format_machine, format_table, machine_description, write_json

REPO = Path(__file__).resolve().parents[1]
ISAACLAB_CLI = Path(sys.executable).with_name("isaaclab")
ALGORITHMS = ("genpo", "trudi", "reppo", "trudi_ppo", "dppo", "fpo", "ppo", "rsl_rl")
# The recipe each diffrl algorithm runs through, and the overrides that pick it there.
RECIPES = {
    "genpo": ("genpo_isaaclab", []),
    "trudi": ("trudi_isaaclab", []),
    "reppo": ("reppo_isaaclab", []),
    "trudi_ppo": ("trudi_isaaclab", ["algorithm=trudi_ppo"]),
    "dppo": ("dppo_isaaclab", []),
    "fpo": ("fpo_isaaclab", []),
    "ppo": ("ppo_isaaclab", []),
}
DEFAULT_OUT = REPO / "benchmarks" / "out" / "learning"
# Time a case past --timeout has to checkpoint its last iteration and close its MLflow run.
TERMINATE_GRACE_SECONDS = 120


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of the sweep: its recipe preset and the budget every algorithm gets on it."""

    key: str
    env_id: str
    backend: str  # "isaaclab" or "mujoco"
    num_envs: int
    steps_per_env: int
    iterations: int
    # Per-algorithm Hydra overrides beyond the preset (rsl_rl's reference where the recipe differs).
    overrides: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    max_episode_steps: int | None = None  # MuJoCo only: None keeps the task's limit (1000)
    episode_length_s: float | None = None  # Isaac Lab only: None keeps the task's time-out
    preset_name: str | None = None  # the recipes' task preset, when it is not ``key``

    @property
    def preset(self) -> str:
        return self.preset_name or self.key

    @property
    def frames_per_iteration(self) -> int:
        return self.num_envs * self.steps_per_env

    @property
    def total_frames(self) -> int:
        return self.iterations * self.frames_per_iteration


TASKS: dict[str, TaskSpec] = {
    # rsl_rl's CartpolePPORunnerCfg: 16 steps per env, [32, 32] networks for the Gaussian policy.
    "cartpole": TaskSpec(
        "cartpole",
        "Isaac-Cartpole",
        "isaaclab",
        num_envs=256,
        steps_per_env=16,
        iterations=60,
        overrides={"ppo": ["algorithm.hidden_sizes=[32,32]", "algorithm.critic_hidden_sizes=[32,32]"]},
    ),
    # rsl_rl's AntPPORunnerCfg: 32 steps per env, entropy coefficient 0.
    "ant": TaskSpec(
        "ant",
        "Isaac-Ant",
        "isaaclab",
        num_envs=128,
        steps_per_env=32,
        iterations=24,
        overrides={"ppo": ["algorithm.loss.entropy_coeff=0"]},
    ),
    # The preset's 64 envs x 32 steps, with 200-step episodes instead of 1000: within a CPU budget of
    # ~100k frames, 1000-step episodes would end only once per env, all at the same time (no
    # terminations), leaving one point on the curve. Returns are not comparable with published
    # (1000-step) HalfCheetah numbers.
    "halfcheetah": TaskSpec(
        "halfcheetah", "HalfCheetah-v5", "mujoco", num_envs=64, steps_per_env=32, iterations=40, max_episode_steps=200
    ),
    # The pathwise comparison of docs/results.md ("TruDi as published"): full 1000-step episodes and a
    # budget where the curves separate (issue: 1M frames or more).
    "halfcheetah_1m": TaskSpec(
        "halfcheetah_1m",
        "HalfCheetah-v5",
        "mujoco",
        num_envs=64,
        steps_per_env=32,
        iterations=489,
        preset_name="halfcheetah",
    ),
    # Ant-v5 at HalfCheetah's CPU budget, for the pathwise comparison: 200-step episodes for the same reason
    # (Ant also ends an episode when the torso leaves its height range).
    "ant_v5": TaskSpec(
        "ant_v5", "Ant-v5", "mujoco", num_envs=64, steps_per_env=32, iterations=40, max_episode_steps=200
    ),
    "ant_v5_1m": TaskSpec(
        "ant_v5_1m", "Ant-v5", "mujoco", num_envs=64, steps_per_env=32, iterations=489, preset_name="ant_v5"
    ),
}
# The ten GenPO task presets (docs/tasks.md) at one equal CPU budget: 64 envs, each preset's rollout length, and
# the same frames for every task and algorithm. A smoke-level comparison on the offline stand-ins, not the paper's
# numbers: at 4096 GPU envs the presets train ~2,000-4,000 times longer.
PRESET_SUITE = (
    "ant", "humanoid", "anymal_d_flat", "h1", "go2", "shadow_hand", "quadcopter", "franka_reach", "franka_lift",
    "franka_open_drawer",
)  # fmt: skip
PRESET_SUITE_ENVS = 64
PRESET_SUITE_FRAMES = 64 * 768  # 48 iterations x 16 steps, 32 x 24 or 24 x 32


def preset_suite_task(preset: str) -> TaskSpec:
    """``preset`` at the suite's budget (key ``<preset>_suite``); its task id and rollout length are the preset's."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(REPO / "recipes" / "config" / "task" / f"{preset}.yaml")
    steps = int(config.collector.steps_per_env)
    if PRESET_SUITE_FRAMES % (PRESET_SUITE_ENVS * steps):
        raise ValueError(f"{preset}: {steps} steps per env do not divide the suite's {PRESET_SUITE_FRAMES} frames")
    return TaskSpec(
        f"{preset}_suite",
        str(config.env.task),
        "isaaclab",
        num_envs=PRESET_SUITE_ENVS,
        steps_per_env=steps,
        iterations=PRESET_SUITE_FRAMES // (PRESET_SUITE_ENVS * steps),
        preset_name=preset,
    )


TASKS.update({f"{preset}_suite": preset_suite_task(preset) for preset in PRESET_SUITE})
# The method comparison of docs/results.md on the Go2 stand-in: the preset's 24-step rollouts, 196,608 frames,
# and 5 s episodes (250 steps) instead of 20 s, so that every env finishes episodes and returns can be read.
TASKS["go2"] = TaskSpec(
    "go2",
    "Isaac-Velocity-Flat-UnitreeGo2",
    "isaaclab",
    num_envs=128,
    steps_per_env=24,
    iterations=64,
    episode_length_s=5.0,
)
# Episodes of 50 steps so that the tiny run finishes some (plumbing only; not a result).
QUICK_TASK = TaskSpec(
    "halfcheetah", "HalfCheetah-v5", "mujoco", num_envs=8, steps_per_env=32, iterations=3, max_episode_steps=50
)


# -- the commands -----------------------------------------------------------------------------------


def case_dir(out: Path, task: TaskSpec, algorithm: str, seed: int) -> Path:
    return out / task.key / algorithm / f"seed{seed}"


@dataclasses.dataclass(frozen=True)
class Variant:
    """A diffrl algorithm with extra Hydra overrides, run and reported under its own label."""

    label: str
    algorithm: str
    overrides: tuple[str, ...]

    @classmethod
    def parse(cls, words: Sequence[str]) -> Variant:
        """``LABEL ALGORITHM OVERRIDE...`` as given to ``--variant``."""
        if len(words) < 3 or words[1] not in RECIPES:
            raise SystemExit(
                f"--variant {' '.join(words)}: expected LABEL ALGORITHM OVERRIDE... with ALGORITHM one of "
                f"{', '.join(RECIPES)}"
            )
        return cls(words[0], words[1], tuple(words[2:]))

    @staticmethod
    def add_argument(parser: argparse.ArgumentParser) -> None:
        """The repeatable ``--variant LABEL ALGORITHM OVERRIDE...`` option (read with :meth:`parse`)."""
        parser.add_argument(
            "--variant",
            nargs="+",
            action="append",
            default=[],
            metavar="WORD",
            help="LABEL ALGORITHM OVERRIDE...: also run ALGORITHM with these Hydra overrides, reported as LABEL "
            "(repeatable; e.g. --variant trudi_K4 trudi algorithm.actor.num_steps=4)",
        )


def case_command(
    task: TaskSpec, algorithm: str, seed: int, run_dir: Path, extra_overrides: Sequence[str] = ()
) -> list[str]:
    """The one command that trains ``algorithm`` on ``task`` with ``seed`` at the task's budget."""
    limit = [] if task.max_episode_steps is None else [task.max_episode_steps]
    if algorithm == "rsl_rl" and task.backend == "mujoco":
        return [
            sys.executable,
            str(REPO / "benchmarks" / "rsl_rl_gym.py"),
            "--task",
            task.env_id,
            "--num-envs",
            str(task.num_envs),
            "--steps-per-env",
            str(task.steps_per_env),
            "--iterations",
            str(task.iterations),
            "--seed",
            str(seed),
            *[f"--max-episode-steps={steps}" for steps in limit],
        ]
    if algorithm == "rsl_rl":
        if task.episode_length_s is not None:
            raise ValueError(f"{task.key}: the rsl_rl baseline runs Isaac Lab's CLI at the task's own episode length")
        return [
            str(ISAACLAB_CLI),
            "train",
            "--rl_library",
            "rsl_rl",
            "--task",
            task.env_id,
            "--num_envs",
            str(task.num_envs),
            "--seed",
            str(seed),
            "--device",
            "cpu",
            "--viz",
            "none",
            "agent.device=cpu",
            f"agent.num_steps_per_env={task.steps_per_env}",
            f"agent.max_iterations={task.iterations}",
        ]
    recipe, selection = RECIPES[algorithm]
    command = [
        sys.executable,
        str(REPO / "recipes" / f"{recipe}.py"),
        *selection,
        f"task={task.preset}",
        f"seed={seed}",
        f"env.num_envs={task.num_envs}",
        f"collector.steps_per_env={task.steps_per_env}",
        f"collector.total_frames={task.total_frames}",
        "logger.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    if task.backend == "isaaclab":
        command.append("env.assets=offline")
    command += [f"env.max_episode_steps={steps}" for steps in limit]
    if task.episode_length_s is not None:
        command.append(f"env.episode_length_s={task.episode_length_s}")
    return [*command, *task.overrides.get(algorithm, []), *extra_overrides]


def display_command(command: Sequence[str]) -> str:
    """The command as a user would type it from the repository root (no absolute paths)."""
    words = []
    for word in command:
        if word == sys.executable:
            word = "python"
        elif word == str(ISAACLAB_CLI):
            word = "isaaclab"
        elif word.startswith(str(REPO) + "/"):
            word = word[len(str(REPO)) + 1 :]
        elif word.startswith("hydra.run.dir="):
            word = "hydra.run.dir=<run dir>"
        words.append(shlex.quote(word))
    return " ".join(words)


def git_commit() -> str:
    """The commit of the checkout that runs (``+dirty`` when tracked files differ from it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=REPO, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# -- reading a run's curve ------------------------------------------------------------------------------

RSL_RL_BLOCK = re.compile(
    r"Total steps:\s*(\d+).*?Collection time:\s*([\d.]+)s.*?Learning time:\s*([\d.]+)s(.*?)(?=Learning iteration|\Z)",
    re.S,
)
RSL_RL_REWARD = re.compile(r"Mean reward:\s*(-?[\d.]+|nan)")


def parse_rsl_rl_output(text: str) -> dict[str, list[float]]:
    """Frames, mean return (last 100 episodes; NaN before the first one ends) and seconds per iteration."""
    frames, returns, seconds = [], [], []
    for steps, collection, learning, rest in RSL_RL_BLOCK.findall(text):
        reward = RSL_RL_REWARD.search(rest)
        frames.append(float(steps))
        returns.append(float(reward.group(1)) if reward else math.nan)
        seconds.append(float(collection) + float(learning))
    return {"frames": frames, "returns": returns, "train_seconds": seconds}


def read_mlflow_curve(run_dir: Path) -> dict[str, list[float]]:
    """The same series from a diffrl run directory's MLflow store (``run.json`` names the run)."""
    from mlflow.tracking import MlflowClient

    from diffrl.training.run_directory import RunDirectory
    from diffrl.training.tracking import recorded_run

    tracking_uri, run_id = recorded_run(RunDirectory(run_dir))  # a sweep folder may have been moved
    client = MlflowClient(tracking_uri=tracking_uri)

    def series(key: str) -> dict[int, float]:
        return {metric.step: metric.value for metric in client.get_metric_history(run_id, key)}

    frames, returns = series("frames"), series("episode_return")
    collection, update = series("collection_time"), series("update_time")
    rewards = series("reward_per_step")
    steps = sorted(frames)
    return {
        "frames": [frames[step] for step in steps],
        "returns": [returns.get(step, math.nan) for step in steps],
        "train_seconds": [collection.get(step, math.nan) + update.get(step, math.nan) for step in steps],
        # Defined from the first rollout on, also where no episode ends within the budget (1000-step episodes).
        "reward_per_step": [rewards.get(step, math.nan) for step in steps],
    }


# -- one case -----------------------------------------------------------------------------------------


def resume_checkpoint(directory: Path, algorithm: str) -> Path | None:
    """The latest checkpoint an unfinished diffrl case left in ``directory`` (``None``: start over)."""
    from diffrl.training.run_directory import RunDirectory

    return None if algorithm == "rsl_rl" else RunDirectory(directory).latest_checkpoint()


def run_case(
    task: TaskSpec,
    algorithm: str,
    seed: int,
    out: Path,
    timeout: float,
    variant: Variant | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one (task, algorithm, seed) in a subprocess; write and return its record (``case.json``).

    With ``variant``, ``algorithm`` is its label and the command is its algorithm's plus its overrides.
    With ``resume``, a diffrl case continues from the latest checkpoint in its directory (its record's
    ``resumed_from`` names it, and ``wall_seconds`` counts this process only); otherwise, or without a
    checkpoint, the directory is emptied and the case starts over. A case past ``timeout`` gets SIGTERM,
    on which the recipe checkpoints its last iteration, so a later ``resume`` loses nothing.
    """
    directory = case_dir(out, task, algorithm, seed)
    checkpoint = resume_checkpoint(directory, algorithm) if resume else None
    if checkpoint is None and directory.exists():
        shutil.rmtree(directory)  # a fresh run refuses another run's checkpoints and MLflow store
    directory.mkdir(parents=True, exist_ok=True)
    if variant is None:
        command = case_command(task, algorithm, seed, directory.resolve())
    else:
        command = case_command(task, variant.algorithm, seed, directory.resolve(), variant.overrides)
    if checkpoint is not None:
        command.append(f"resume={checkpoint.resolve()}")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # This checkout's diffrl, also when the sweep runs from a snapshot (git worktree) of it.
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if algorithm == "rsl_rl" and task.backend == "isaaclab":
        from diffrl.envs.offline_assets import build_offline_assets

        environment["ISAACSIM_ASSET_ROOT"] = str(build_offline_assets())
        environment.setdefault("WARP_CACHE_PATH", str(Path("~/.cache/diffrl/warp").expanduser()))
    record: dict[str, Any] = {
        "task": task.env_id,
        "task_key": task.key,
        "algorithm": algorithm,
        "seed": seed,
        "num_envs": task.num_envs,
        "steps_per_env": task.steps_per_env,
        "budget_frames": task.total_frames,
        "command": display_command(command),
        "commit": git_commit(),
    }
    if checkpoint is not None:
        record["resumed_from"] = checkpoint.name
    start = time.perf_counter()
    with (directory / "stdout.log").open("a" if checkpoint is not None else "w") as log:
        # rsl_rl writes its logs under the working directory: the case directory.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=directory, env=environment)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=TERMINATE_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            returncode = -1
    record["wall_seconds"] = time.perf_counter() - start
    record["returncode"] = returncode
    try:
        if algorithm == "rsl_rl":
            curve = parse_rsl_rl_output((directory / "stdout.log").read_text())
        else:
            curve = read_mlflow_curve(directory)
    except (OSError, KeyError, ValueError) as error:
        curve = {"frames": [], "returns": [], "train_seconds": []}
        record["error"] = str(error)
    record.update(curve)
    record["frames_done"] = curve["frames"][-1] if curve["frames"] else 0
    record["ok"] = returncode == 0 and record["frames_done"] >= task.total_frames
    record["final_return"] = curve["returns"][-1] if curve["returns"] else math.nan
    (directory / "case.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def load_case(out: Path, task: TaskSpec, algorithm: str, seed: int) -> dict[str, Any] | None:
    path = case_dir(out, task, algorithm, seed) / "case.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("ok") and algorithm != "rsl_rl" and "reward_per_step" not in record:  # a record of an older sweep
        record.update(read_mlflow_curve(path.parent))
    return record if record.get("ok") else None


# -- aggregation ----------------------------------------------------------------------------------------


def on_grid(frames: Sequence[float], values: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """``values`` (at ``frames``) linearly interpolated at ``grid``; NaN outside the curve or before its first value."""
    frames_array = np.asarray(frames, dtype=float)
    values_array = np.asarray(values, dtype=float)
    known = ~np.isnan(values_array)
    result = np.full(grid.shape, np.nan)
    if not known.any():
        return result
    frames_array, values_array = frames_array[known], values_array[known]
    inside = (grid >= frames_array[0]) & (grid <= frames_array[-1])
    result[inside] = np.interp(grid[inside], frames_array, values_array)
    return result


def aggregate_curves(curves: Sequence[tuple[Sequence[float], Sequence[float]]], grid: np.ndarray) -> dict[str, Any]:
    """Mean, std (population, over seeds), min and max at every grid point, over the seeds that have a value there."""
    stacked = np.stack([on_grid(frames, values, grid) for frames, values in curves])
    count = (~np.isnan(stacked)).sum(axis=0)
    with warnings.catch_warnings():  # all-NaN columns (no seed has a value there yet) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stacked, axis=0)
        std = np.nanstd(stacked, axis=0)
        low = np.nanmin(stacked, axis=0)
        high = np.nanmax(stacked, axis=0)
    return {"frames": grid, "mean": mean, "std": std, "min": low, "max": high, "count": count}


def frames_to_reach(record: dict[str, Any], threshold: float) -> float:
    """The first frame count at which the record's curve reaches ``threshold`` (NaN if it never does)."""
    for frames, value in zip(record["frames"], record["returns"], strict=True):
        if value >= threshold:  # NaN (no episode finished yet) compares false
            return float(frames)
    return math.nan


def summarize(records: Sequence[dict[str, Any]], threshold: float | None = None) -> list[dict[str, Any]]:
    """One summary per (task, algorithm): the final return's mean ± std, min, max over seeds, and costs.

    With ``threshold``: also the mean frames to first reach it, over the seeds that do, and how many do.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["task"], record["algorithm"]), []).append(record)
    summaries = []
    for (task, algorithm), group in groups.items():
        finals = np.array([record["final_return"] for record in group], dtype=float)
        with warnings.catch_warnings():  # a run in which no episode ended has no best return: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            bests = np.array([np.nanmax(np.asarray(record["returns"], dtype=float)) for record in group])
        half = np.array([group[0]["budget_frames"] / 2])
        halves = np.array([on_grid(record["frames"], record["returns"], half)[0] for record in group])
        summaries.append(
            {
                "task": task,
                "algorithm": algorithm,
                "seeds": sorted(record["seed"] for record in group),
                "frames": group[0]["budget_frames"],
                "num_envs": group[0]["num_envs"],
                "final_mean": float(np.mean(finals)),
                "final_std": float(np.std(finals)),
                "final_min": float(np.min(finals)),
                "final_max": float(np.max(finals)),
                "best_mean": float(np.mean(bests)),  # each seed's best point of its curve
                "best_std": float(np.std(bests)),
                "half_budget_mean": float(np.mean(halves)),
                "half_budget_std": float(np.std(halves)),
                "wall_seconds_mean": float(np.mean([record["wall_seconds"] for record in group])),
                "train_seconds_mean": float(np.mean([np.nansum(record["train_seconds"]) for record in group])),
                # Medians per run (robust to a slow iteration on a shared CPU), averaged over seeds.
                "seconds_per_iteration": float(np.mean([np.nanmedian(record["train_seconds"]) for record in group])),
            }
        )
        if all("reward_per_step" in record for record in group):
            # The last REWARD_WINDOW rollouts' mean reward per env step (one rollout is noisy).
            lasts = np.array([np.nanmean(record["reward_per_step"][-REWARD_WINDOW:]) for record in group])
            summaries[-1]["reward_per_step_mean"] = float(np.mean(lasts))
            summaries[-1]["reward_per_step_std"] = float(np.std(lasts))
        if threshold is not None:
            reached = np.array([frames_to_reach(record, threshold) for record in group])
            summaries[-1]["threshold"] = threshold
            summaries[-1]["frames_to_threshold"] = (
                float(np.nanmean(reached)) if (~np.isnan(reached)).any() else math.nan
            )
            summaries[-1]["seeds_reaching_threshold"] = int((~np.isnan(reached)).sum())
    return summaries


REWARD_WINDOW = 5


def reached_label(frames: float) -> str:
    return "never" if math.isnan(frames) else f"{frames:,.0f}"


def summary_table(summaries: Sequence[dict[str, Any]]) -> str:
    with_rewards = any("reward_per_step_mean" in s for s in summaries)  # rsl_rl's reports have no reward per step

    def reward_cell(s: dict[str, Any]) -> list[str]:
        if not with_rewards:
            return []
        if "reward_per_step_mean" not in s:
            return ["n/a"]
        return [f"{s['reward_per_step_mean']:.4f} ± {s['reward_per_step_std']:.4f}"]

    rows = [
        (
            s["task"],
            s["algorithm"],
            len(s["seeds"]),
            s["num_envs"],
            f"{s['frames']:,}",
            f"{s['half_budget_mean']:.2f} ± {s['half_budget_std']:.2f}",
            f"{s['final_mean']:.2f} ± {s['final_std']:.2f}",
            f"[{s['final_min']:.2f}, {s['final_max']:.2f}]",
            f"{s['best_mean']:.2f} ± {s['best_std']:.2f}",
            f"{s['wall_seconds_mean']:.0f}",
            f"{s['frames'] / s['train_seconds_mean']:.0f}" if s["train_seconds_mean"] > 0 else "n/a",
            f"{s['seconds_per_iteration']:.2f}",
            *reward_cell(s),
            *(
                [f"{reached_label(s['frames_to_threshold'])} ({s['seeds_reaching_threshold']}/{len(s['seeds'])})"]
                if "threshold" in s
                else []
            ),
        )
        for s in summaries
    ]
    header = (
        "task",
        "algorithm",
        "seeds",
        "envs",
        "frames",
        "return at half",
        "final return",
        "[min, max]",
        "best return",
        "wall s/run",
        "train fps",
        "s/iter",
        *([f"reward/step (last {REWARD_WINDOW} it.)"] if with_rewards else []),
        *([f"frames to {summaries[0]['threshold']:g} (seeds)"] if summaries and "threshold" in summaries[0] else []),
    )
    return format_table(rows, header)


def plot_task(records: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Mean return over seeds against frames, one line per algorithm, shaded ± one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    for algorithm in dict.fromkeys(record["algorithm"] for record in records):  # first-seen order
        group = [record for record in records if record["algorithm"] == algorithm]
        grid = np.unique(np.concatenate([np.asarray(record["frames"], dtype=float) for record in group]))
        stats = aggregate_curves([(record["frames"], record["returns"]) for record in group], grid)
        label = f"{algorithm} ({len(group)} seed{'s' if len(group) > 1 else ''})"
        (line,) = axis.plot(stats["frames"], stats["mean"], label=label)
        axis.fill_between(
            stats["frames"],
            stats["mean"] - stats["std"],
            stats["mean"] + stats["std"],
            color=line.get_color(),
            alpha=0.2,
        )
    axis.set_xlabel("env frames")
    axis.set_ylabel("mean episode return (last 100)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the sweep ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one tiny case (diffrl PPO, HalfCheetah-v5, 8 envs)")
    parser.add_argument("--json", metavar="PATH", help="write one record per (task, algorithm, seed) as JSON")
    parser.add_argument(
        "--task",
        nargs="+",
        choices=[*sorted(TASKS), "presets"],
        help="default: cartpole halfcheetah ant; 'presets': the ten GenPO task presets at one budget (<preset>_suite)",
    )
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, help="default: all")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2")
    Variant.add_argument(parser)
    parser.add_argument("--out", type=Path, help=f"case directories (default {DEFAULT_OUT.relative_to(REPO)})")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip cases whose case.json says they finished; continue stopped ones from their latest checkpoint",
    )
    parser.add_argument(
        "--collect-only", action="store_true", help="run nothing: tables, plots and JSON of the finished cases"
    )
    parser.add_argument("--plots", type=Path, help="write one learning-curve PNG per task into this directory")
    parser.add_argument("--iterations", type=int, help="iterations per case instead of the task's budget (smoke tests)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per case")
    parser.add_argument(
        "--threshold", type=float, metavar="RETURN", help="also tabulate the frames each algorithm takes to reach it"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    if args.quick:
        tasks = [QUICK_TASK]
        algorithms = args.algorithms or ["ppo"]
        seeds = args.seeds or [0]
    else:
        keys = args.task or ["cartpole", "halfcheetah", "ant"]
        keys = [name for key in keys for name in ([f"{p}_suite" for p in PRESET_SUITE] if key == "presets" else [key])]
        tasks = [TASKS[key] for key in keys]
        algorithms = args.algorithms or ([] if args.variant else list(ALGORITHMS))
        seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    variants = {variant.label: variant for variant in map(Variant.parse, args.variant)}
    algorithms = [*algorithms, *variants]
    if args.iterations is not None:
        tasks = [dataclasses.replace(task, iterations=args.iterations) for task in tasks]
    temporary = tempfile.TemporaryDirectory() if args.quick and args.out is None else None
    out = Path(temporary.name) if temporary is not None else (args.out or DEFAULT_OUT)
    machine = machine_description(torch.device("cpu"))
    print(format_machine(machine), flush=True)
    records: list[dict[str, Any]] = []
    failed: list[str] = []
    try:
        # Seed-major: a sweep stopped early leaves every task with the same number of seeds (± 1).
        for seed in seeds:
            for task in tasks:
                for algorithm in algorithms:
                    label = f"{task.env_id} {algorithm} seed {seed}"
                    record = load_case(out, task, algorithm, seed) if args.resume or args.collect_only else None
                    if record is None and args.collect_only:
                        print(f"not finished: {label}", flush=True)
                        continue
                    if record is None:
                        print(f"running: {label} ({task.total_frames} frames)", flush=True)
                        record = run_case(
                            task, algorithm, seed, out, args.timeout, variants.get(algorithm), args.resume
                        )
                    else:
                        print(f"kept: {label}", flush=True)
                    if record["ok"]:
                        records.append(record)
                        print(
                            f"  {label}: return {record['final_return']:.2f} at {record['frames_done']:.0f} frames, "
                            f"{record['wall_seconds']:.0f} s",
                            flush=True,
                        )
                    else:
                        failed.append(label)
                        log = case_dir(out, task, algorithm, seed) / "stdout.log"
                        print(f"FAILED: {label} (exit {record['returncode']}; see {log})", file=sys.stderr, flush=True)
    finally:
        if temporary is not None:
            temporary.cleanup()
    for task in tasks:  # one table per task
        task_records = [record for record in records if record["task_key"] == task.key]
        if task_records:
            table = summary_table(summarize(task_records, args.threshold))
            print(f"\n{task.env_id}, {task.total_frames:,} frames per run:\n{table}")
    if args.plots is not None:
        for task in tasks:
            task_records = [record for record in records if record["task_key"] == task.key]
            if task_records:
                title = (
                    f"{task.env_id}, {task.num_envs} envs"
                    + (f", {task.max_episode_steps}-step episodes" if task.max_episode_steps else "")
                    + (f", {task.episode_length_s:g} s episodes" if task.episode_length_s else "")
                )
                path = plot_task(task_records, args.plots / f"learning_{task.key}.png", title)
                print(f"plot: {path}")
    if failed:
        print(f"{len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
    if args.json:
        write_json(args.json, machine, records)
    return records


if __name__ == "__main__":
    main()
