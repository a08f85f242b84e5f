"""recipes/evaluate.py and the export command on real (tiny) training runs, as a user runs them.

Each run trains for one or two iterations only: what is checked is the plumbing (loading a run or a
checkpoint, the env, both modes, video, MLflow child runs, exported models), not learning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from diffrl.deploy.evaluation import VIDEO_MAX_FRAMES, EpisodeStatistics, run_evaluation

REPO = Path(__file__).resolve().parents[2]


def run(script: str, *arguments: str, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, *([str(REPO / script)] if script.endswith(".py") else ["-m", script]), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=os.environ.copy())


def train(run_dir: Path, recipe: str, *overrides: str) -> Path:
    result = run(f"recipes/{recipe}.py", f"hydra.run.dir={run_dir}", "logger.progress=false", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def child_runs(run_dir: Path, kind: str) -> list:
    info = json.loads((run_dir / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    experiment_id = client.get_run(info["mlflow_run_id"]).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{info['mlflow_run_id']}' and tags.`diffrl.kind` = '{kind}'"
    return client.search_runs([experiment_id], query)


@pytest.fixture(scope="module")
def halfcheetah_run(tmp_path_factory) -> Path:
    """GenPO on HalfCheetah-v5: 4 envs, 2 iterations of 32 steps, observation normalization on."""
    return train(
        tmp_path_factory.mktemp("genpo_halfcheetah"),
        "genpo_isaaclab",
        "task=halfcheetah",
        "env.num_envs=4",
        "collector.total_frames=256",
        "algorithm.hidden_sizes=[32,32]",
        "algorithm.critic_hidden_sizes=[32,32]",
    )


@pytest.mark.slow
def test_evaluate_reports_both_modes_and_logs_a_child_run(halfcheetah_run, tmp_path):
    result = run(
        "recipes/evaluate.py",
        f"source={halfcheetah_run}",
        "episodes=3",
        "max_episode_steps=40",
        "video_size=[64,48]",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "evaluation.json").read_text())
    for mode in ("deterministic", "stochastic"):
        assert report["statistics"][mode]["lengths"] == [40, 40, 40]  # HalfCheetah never terminates
        assert np.isfinite(report["metrics"][f"{mode}/return_mean"])
        assert report["metrics"][f"{mode}/return_std"] >= 0
    (children,) = child_runs(halfcheetah_run, "evaluation")
    assert children.data.metrics["deterministic/episodes"] == 3
    assert children.data.params["episodes"] == "3"
    if report["video_status"] == "recorded":  # where OpenGL is available (MUJOCO_GL)
        for mode in ("deterministic", "stochastic"):
            assert (tmp_path / f"video_{mode}.gif").stat().st_size > 1000
        client = MlflowClient(json.loads((halfcheetah_run / "run.json").read_text())["tracking_uri"])
        videos = {artifact.path for artifact in client.list_artifacts(children.info.run_id, "videos")}
        assert videos == {"videos/video_deterministic.gif", "videos/video_stochastic.gif"}
    else:
        assert "MuJoCo could not render" in report["video_status"]
        assert children.data.tags["video"] == report["video_status"]


@pytest.mark.slow
def test_export_command_on_a_checkpoint_logs_the_model_with_a_signature(halfcheetah_run, tmp_path):
    checkpoint = next((halfcheetah_run / "checkpoints").glob("checkpoint-*"))
    result = run("diffrl.deploy.export", str(checkpoint), "--format", "onnx", "torchscript", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    contract = json.loads((tmp_path / "policy.json").read_text())
    assert contract["algorithm"] == "genpo" and contract["observation_normalizer"]["baked_in"]
    assert contract["inputs"][0]["shape"] == ["batch", 17]
    # The checkpoint's policy equals the final policy.pt's (the run ends on that checkpoint).
    from diffrl.deploy.export import deployable_policy, normalization_affine
    from diffrl.deploy.policy_loading import load_policy

    final = load_policy(halfcheetah_run)
    reference = deployable_policy(final.actor, *normalization_affine(final))
    observation, noise = torch.randn(8, 17), torch.randn(8, 12)
    exported = torch.jit.load(os.fspath(tmp_path / "policy.torchscript.pt"))
    assert (exported(observation, noise) - reference(observation, noise)).abs().max() <= 1e-5

    (export_run,) = child_runs(halfcheetah_run, "export")
    client = MlflowClient(json.loads((halfcheetah_run / "run.json").read_text())["tracking_uri"])
    assert "policy.json" in {artifact.path for artifact in client.list_artifacts(export_run.info.run_id)}
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)  # the models are MLflow 3 logged models of the child run
    zeros = np.zeros((8, 12), np.float32)
    onnx_model = mlflow.pyfunc.load_model(f"runs:/{export_run.info.run_id}/policy_onnx")
    assert [spec.name for spec in onnx_model.metadata.get_input_schema().inputs] == ["observation", "noise"]
    action = onnx_model.predict({"observation": observation.numpy(), "noise": zeros})["action"]
    torchscript_model = mlflow.pytorch.load_model(f"runs:/{export_run.info.run_id}/policy_torchscript")
    torch.testing.assert_close(torchscript_model(observation, torch.from_numpy(zeros)), torch.from_numpy(action))


def gif_frames(path: Path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


@pytest.mark.slow
def test_evaluate_isaac_ant_records_a_moving_video_of_each_mode(tmp_path):
    """The issue's check: an Isaac-Ant run's evaluation writes videos whose frames are not all identical."""
    run_dir = train(
        tmp_path / "genpo_ant",
        "genpo_isaaclab",
        "task=ant",
        "env.assets=offline",
        "env.num_envs=16",
        "env.device=cpu",
        "collector.total_frames=512",  # one iteration of 32 steps
    )
    result = run(
        "recipes/evaluate.py",
        f"source={run_dir}",
        "episodes=2",
        "video_size=[64,48]",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["video_status"] == "recorded"
    for mode in ("deterministic", "stochastic"):
        frames = gif_frames(tmp_path / "eval" / f"video_{mode}.gif")
        # env 0's first episode, every second step (at most 500 frames): a falling or walking ant moves.
        longest = max(report["statistics"][mode]["lengths"])
        assert 10 <= len(frames) <= min(VIDEO_MAX_FRAMES, (longest + 1) // 2 + 1)
        assert frames[0].shape == (48, 64, 3)
        change = max(np.abs(frame.astype(int) - frames[0].astype(int)).mean() for frame in frames)
        assert change > 1.0, change
    (evaluation,) = child_runs(run_dir, "evaluation")
    client = MlflowClient(json.loads((run_dir / "run.json").read_text())["tracking_uri"])
    videos = {artifact.path for artifact in client.list_artifacts(evaluation.info.run_id, "videos")}
    assert videos == {"videos/video_deterministic.gif", "videos/video_stochastic.gif"}
    assert evaluation.data.tags["video"] == "recorded"


@pytest.mark.slow
def test_evaluate_isaac_lab_without_opengl_says_why_and_goes_on(tmp_path):
    run_dir = train(
        tmp_path / "trudi_cartpole",
        "trudi_isaaclab",
        "env.assets=offline",
        "env.num_envs=16",
        "collector.total_frames=256",  # one iteration of 16 steps
    )
    # No EGL vendor library: libglvnd finds no driver, as on a machine without Mesa's or NVIDIA's EGL.
    environment = {**os.environ, "__EGL_VENDOR_LIBRARY_FILENAMES": str(tmp_path / "no_vendor.json")}
    environment.pop("DISPLAY", None)
    command = [sys.executable, str(REPO / "recipes/evaluate.py"), f"source={run_dir}", "episodes=4"]
    command.append(f"hydra.run.dir={tmp_path / 'eval'}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["video_status"].startswith("Newton's OpenGL viewer could not start")
    assert "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri" in report["video_status"]
    assert "no video: Newton's OpenGL viewer could not start" in result.stderr + result.stdout
    assert report["videos"] == {}
    for mode in ("deterministic", "stochastic"):
        lengths = report["statistics"][mode]["lengths"]
        assert len(lengths) == 4 and all(1 <= length <= 300 for length in lengths)  # Cartpole: 5 s at 60 Hz


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run_evaluation(output_dir=tmp_path, source=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="exactly one of source"):
        run_evaluation(output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown evaluation mode\(s\) \['greedy'\]"):
        run_evaluation(output_dir=tmp_path, source=tmp_path, modes=["greedy"])
    with pytest.raises(ValueError, match="needs tracking_uri"):
        run_evaluation(output_dir=tmp_path, mlflow_run="0123")


def test_episode_statistics_are_population_mean_and_std():
    stats = EpisodeStatistics("deterministic", returns=[1.0, 3.0], lengths=[10, 20])
    assert stats.metrics() == {
        "deterministic/return_mean": 2.0,
        "deterministic/return_std": 1.0,
        "deterministic/length_mean": 15.0,
        "deterministic/length_std": 5.0,
        "deterministic/episodes": 2.0,
    }


@pytest.mark.slow
def test_policy_downloaded_from_mlflow_is_the_runs_policy(halfcheetah_run, tmp_path):
    from diffrl.deploy.policy_loading import download_policy, load_policy

    info = json.loads((halfcheetah_run / "run.json").read_text())
    downloaded = load_policy(download_policy(info["mlflow_run_id"], info["tracking_uri"], tmp_path))
    local = load_policy(halfcheetah_run)
    for key, value in local.actor.state_dict().items():
        assert torch.equal(downloaded.actor.state_dict()[key], value), key
    observation = torch.randn(4, 17)
    assert torch.equal(downloaded.normalize(observation), local.normalize(observation))
    with pytest.raises(ValueError, match=r"has no policy\.pt artifact"):
        download_policy("0" * 32, info["tracking_uri"], tmp_path / "missing")
