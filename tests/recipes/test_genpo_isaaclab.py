"""The main job end to end: recipes/genpo_isaaclab.py on Isaac-Cartpole (CPU, offline assets).

The recipe runs as a user runs it, in its own process (Isaac Lab allows one simulation per
process): it must learn, track everything in MLflow, and resume with counters continuing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "genpo_isaaclab.py"
FRAMES_PER_ITERATION = 256 * 16  # the Cartpole preset: 256 envs x 16 steps


def run_recipe(run_dir: Path, *overrides: str, timeout: float = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, str(RECIPE), f"hydra.run.dir={run_dir}", "logger.progress=false", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=os.environ.copy())


def metric_values(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((metric.step, metric.value) for metric in client.get_metric_history(run_id, key))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("env.taks=Isaac-Ant", "Could not override 'env.taks'"),
        ("env.num_envs=0", "env.num_envs=0: must be a positive integer"),
        ("torch_threads=0", "torch_threads=0: must be a positive integer or null"),
        ("env.device=tpu", "is not a torch device"),
        ("env.device=cuda:0", "no CUDA device is available"),
        ("resume=/nonexistent/checkpoint", "no such checkpoint"),
        ("resume=/", "not a TorchRL checkpoint"),  # exists, but neither a checkpoint nor a run directory
    ],
)
def test_bad_overrides_are_clear_errors(tmp_path, override, message):
    if override.startswith("env.device=cuda") and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = run_recipe(tmp_path / "run", override, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


@pytest.mark.slow
def test_unknown_task_lists_the_available_ones(tmp_path):
    result = run_recipe(tmp_path / "run", "env.task=Isaac-Nope", "env.assets=offline", timeout=600)
    assert result.returncode == 2
    output = result.stderr + result.stdout
    assert "Isaac-Nope" in output and "Isaac-Cartpole" in output


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One short GenPO training on Isaac-Cartpole: 40 iterations, 164k frames."""
    run_dir = tmp_path_factory.mktemp("genpo_cartpole")
    result = run_recipe(
        run_dir, "env.assets=offline", f"collector.total_frames={40 * FRAMES_PER_ITERATION}", "checkpoint.every=10"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_genpo_learns_isaac_cartpole(trained_run):
    info = json.loads((trained_run / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    returns = [value for _, value in metric_values(client, info["mlflow_run_id"], "episode_return")]
    first, last = returns[:5], returns[-5:]
    # A random policy scores about -2 on Cartpole, balancing 300 steps about 4.9: the last
    # iterations must be clearly above the first ones (more than 1.5 return units).
    assert sum(last) / len(last) > sum(first) / len(first) + 1.5, returns


@pytest.mark.slow
def test_mlflow_run_has_params_metrics_and_artifacts(trained_run):
    info = json.loads((trained_run / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    run = client.get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["env.task"] == "Isaac-Cartpole"
    assert params["algorithm.loss.compression_coeff"] == "0.01"
    assert params["algorithm.actor.flow.num_steps"] == "5"
    assert run.data.tags["assets"] == "offline"
    assert params["assets.source"] == "offline"
    assert "newton" in params["assets.stand_ins"], "the stand-in and its source package are on record"
    for key in ("episode_return", "loss_objective", "loss_critic", "loss_compression", "kl_approx", "kl_k3"):
        history = metric_values(client, info["mlflow_run_id"], key)
        assert [step for step, _ in history][-1] == 40, key
        assert all(math.isfinite(value) for _, value in history), key
    for key in ("clip_fraction", "learning_rate", "entropy", "frames_per_second", "ESS", "explained_variance"):
        assert key in run.data.metrics, key
    artifacts = {artifact.path for artifact in client.list_artifacts(info["mlflow_run_id"])}
    assert {"config.yaml", "learning_curve.png", "policy.pt", "checkpoints"} <= artifacts
    assert (trained_run / "learning_curve.png").stat().st_size > 10_000


@pytest.mark.slow
def test_resume_continues_the_iteration_count(trained_run):
    assert (trained_run / "checkpoints" / "checkpoint-000000000040").exists()  # the latest
    result = run_recipe(
        trained_run,
        "env.assets=offline",
        f"collector.total_frames={42 * FRAMES_PER_ITERATION}",
        f"resume={trained_run}",  # the run directory: its latest checkpoint
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((trained_run / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    frames = metric_values(client, info["mlflow_run_id"], "frames")
    assert frames[-3:] == [(step, step * FRAMES_PER_ITERATION) for step in (40, 41, 42)]
    assert client.get_run(info["mlflow_run_id"]).info.status == "FINISHED"
    assert (trained_run / "checkpoints" / "checkpoint-000000000042").exists()
