"""run_experiment through a recipe, as users launch it: SIGTERM mid-run, and two torchrun ranks.

HalfCheetah-v5 (gymnasium MuJoCo) keeps these fast; the Isaac Lab path is the same code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "recipes" / "genpo_isaaclab.py")
NUM_ENVS, STEPS = 4, 16
SMALL = [
    "task=halfcheetah",
    f"env.num_envs={NUM_ENVS}",
    f"collector.steps_per_env={STEPS}",
    "algorithm.hidden_sizes=[16]",
    "algorithm.critic_hidden_sizes=[16]",
    "logger.progress=false",
]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def recipe_command(run_dir: Path, *overrides: str) -> list[str]:
    return [RECIPE, f"hydra.run.dir={run_dir}", *SMALL, *overrides]


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def mlflow_run(run_dir: Path) -> tuple[MlflowClient, str]:
    info = json.loads((run_dir / "run.json").read_text())
    return MlflowClient(info["tracking_uri"]), info["mlflow_run_id"]


def frames_logged(run_dir: Path) -> list[tuple[int, float]]:
    client, run_id = mlflow_run(run_dir)
    return sorted((metric.step, metric.value) for metric in client.get_metric_history(run_id, "frames"))


@pytest.mark.slow
def test_sigterm_checkpoints_closes_the_mlflow_run_and_the_run_resumes(tmp_path):
    process = subprocess.Popen(
        [sys.executable, *recipe_command(tmp_path, "collector.total_frames=10_000_000", "checkpoint.every=1000")],
        stdout=subprocess.PIPE,  # Hydra's log handler writes to stdout
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    for line in process.stdout:  # the per-iteration log line
        if "iteration 3," in line:
            process.send_signal(signal.SIGTERM)
            break
    else:
        pytest.fail(f"the run ended (status {process.wait()}) before its third iteration")
    remaining = process.communicate(timeout=120)[0]
    checkpoints = sorted((tmp_path / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "a checkpoint of the last completed iteration was written"
    # A requested stop: the shell's status for SIGTERM, the way to continue, no traceback.
    assert process.returncode == 128 + signal.SIGTERM, remaining[-3000:]
    assert f"stopped by SIGTERM; to continue: resume={checkpoints[-1]}" in remaining
    assert "Traceback" not in remaining
    stopped_at = int(checkpoints[-1].name.split("-")[1])
    assert stopped_at >= 3
    client, run_id = mlflow_run(tmp_path)
    assert client.get_run(run_id).info.status == "KILLED"

    total = (stopped_at + 2) * NUM_ENVS * STEPS
    run([sys.executable, *recipe_command(tmp_path, f"collector.total_frames={total}", f"resume={checkpoints[-1]}")])
    frames = frames_logged(tmp_path)
    assert frames[-3:] == [(step, step * NUM_ENVS * STEPS) for step in range(stopped_at, stopped_at + 3)]
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_resume_from_an_earlier_checkpoint_sets_the_later_ones_aside(tmp_path):
    """A new branch from iteration 2 of a 4-iteration run: the old branch's checkpoints 3, 4 and its policy.pt
    are kept aside, and the run directory's latest checkpoint and policy are the new branch's."""
    frames = NUM_ENVS * STEPS
    every_iteration = ["checkpoint.every=1", "checkpoint.keep=10"]
    run([sys.executable, *recipe_command(tmp_path, f"collector.total_frames={4 * frames}", *every_iteration)])
    checkpoints = tmp_path / "checkpoints"
    old_policy = (tmp_path / "policy.pt").read_bytes()
    result = run(
        [
            sys.executable,
            *recipe_command(
                tmp_path,
                f"collector.total_frames={3 * frames}",
                f"resume={checkpoints / 'checkpoint-000000000002'}",
                *every_iteration,
            ),
        ]
    )
    (aside,) = (tmp_path / "abandoned").iterdir()
    assert aside.name.endswith("-after-2")
    assert f"resuming from checkpoint-000000000002 starts a new branch: what came after it moved to {aside}" in (
        result.stdout + result.stderr
    )
    assert sorted(path.name for path in (aside / "checkpoints").iterdir()) == [
        "checkpoint-000000000003",
        "checkpoint-000000000004",
    ]
    assert (aside / "policy.pt").read_bytes() == old_policy
    assert sorted(path.name for path in checkpoints.iterdir()) == [f"checkpoint-00000000000{i}" for i in (1, 2, 3)]
    assert torch.load(tmp_path / "policy.pt", weights_only=True)["iteration"] == 3


@pytest.mark.slow
def test_a_resume_that_changes_what_is_learned_is_refused_by_name_and_changes_nothing(tmp_path):
    frames = NUM_ENVS * STEPS
    run([sys.executable, *recipe_command(tmp_path, f"collector.total_frames={frames}")])
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    overrides = [f"collector.total_frames={2 * frames}", f"resume={tmp_path}", "checkpoint.keep=5"]
    output = refused(
        [sys.executable, *recipe_command(tmp_path, *overrides, "trainer.learning_rate=1e-6", "trainer.num_epochs=1")]
    )
    assert "a resumed run continues with its own settings, and these differ from" in output
    assert "trainer.learning_rate=1e-06 (trained with 0.0005), trainer.num_epochs=1 (trained with 5)" in output
    assert "a resume may change only collector.total_frames, checkpoint.*, logger.progress," in output
    after = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    changed = {path.name for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed <= {"recipe.log", ".diffrl.lock"}, changed
    run([sys.executable, *recipe_command(tmp_path, *overrides)])  # what only says how long and how: resumed


@pytest.mark.slow
def test_two_torchrun_ranks_log_once_count_both_and_resume(tmp_path):
    frames_per_iteration = 2 * NUM_ENVS * STEPS  # both ranks' frames
    run([*TORCHRUN, *recipe_command(tmp_path, f"collector.total_frames={3 * frames_per_iteration}")])
    assert frames_logged(tmp_path) == [(step, step * frames_per_iteration) for step in (1, 2, 3)]
    checkpoint = tmp_path / "checkpoints" / "checkpoint-000000000003"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert "rollout" in manifest["components"]

    resumed = recipe_command(tmp_path, f"collector.total_frames={5 * frames_per_iteration}", f"resume={checkpoint}")
    result = run([*TORCHRUN, *resumed])
    assert "episodes restart" not in result.stderr, "each rank restored its own rollout state"
    assert frames_logged(tmp_path)[-2:] == [(step, step * frames_per_iteration) for step in (4, 5)]
    client, run_id = mlflow_run(tmp_path)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1, "rank 1 tracked nothing"


def refused(command: list[str]) -> str:
    """The recipe's output when it exits with a configuration error (status 2, one line, no traceback)."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=os.environ.copy())
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    return output


@pytest.mark.slow
def test_a_fresh_run_in_a_finished_runs_directory_is_refused_and_leaves_it_intact(tmp_path):
    run([sys.executable, *recipe_command(tmp_path, f"collector.total_frames={NUM_ENVS * STEPS}")])
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    latest = tmp_path / "checkpoints" / "checkpoint-000000000001"
    output = refused([sys.executable, *recipe_command(tmp_path, f"collector.total_frames={2 * NUM_ENVS * STEPS}")])
    assert f"already holds another run (MLflow run {mlflow_run(tmp_path)[1]})" in output
    assert f"resume it with resume={latest}" in output
    after = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    changed = {path.name for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed <= {"recipe.log", ".diffrl.lock"}, changed  # Hydra's log appends; nothing else moves


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_one_line_before_the_env_is_built(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once the probe closes
    output = refused([sys.executable, *recipe_command(tmp_path, f"logger.tracking_uri={uri}")])
    assert f"logger.tracking_uri={uri}: no MLflow server answered within 15 s" in output
    assert "sync copies" not in output, "the env was built before the tracking store was checked"
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("resume={tmp}/nowhere/checkpoints/checkpoint-000000000001", "resume={tmp}/nowhere/checkpoints/"),
        ("resume={tmp}/notes", "resume={tmp}/notes: not a TorchRL checkpoint"),  # exists, no checkpoint
        ("hydra.run.dir=/proc/diffrl-run", "hydra.run.dir=/proc/diffrl-run: cannot be created"),
        ("checkpoint.every=0", "checkpoint.every=0: must be a positive integer"),
        ("env.num_envs=abc", "env.num_envs='abc': must be a positive integer"),
        ("seed=abc", "seed='abc': must be an integer"),
        ("seed=1.5", "seed=1.5: must be an integer"),
        ("torch_threads=abc", "torch_threads='abc': must be a positive integer or null"),
        ("trainer.num_minibatches=100", "num_minibatches=100 exceeds the rollout's 64 samples"),
    ],
)
def test_a_bad_path_or_count_is_one_line_and_leaves_no_directory(tmp_path, override, message):
    run_dir = tmp_path / "run"
    (tmp_path / "notes").mkdir()
    override, message = override.format(tmp=tmp_path), message.format(tmp=tmp_path)
    output = refused([sys.executable, *recipe_command(run_dir, override)])
    assert message in output
    assert "sync copies" not in output, "the env was built before the setting was checked"
    assert not (tmp_path / "nowhere").exists()
    assert not run_dir.exists(), "a run refused before it started leaves no directory (Hydra's own removed)"


@pytest.mark.slow
def test_a_module_refusing_its_config_is_one_line_and_leaves_no_directory(tmp_path):
    """The ValueError of a constructor Hydra instantiates (after the env and the run lock) is reported as
    such, not as Hydra's InstantiationException traceback."""
    output = refused([sys.executable, *recipe_command(tmp_path / "run", "algorithm.actor.flow.num_steps=0")])
    assert "GenPO needs at least one flow step, got num_steps=0" in output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_runs_tracked_into_a_named_store_keep_their_artifacts_beside_it_not_in_the_working_directory(tmp_path):
    store, workdir = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    workdir.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable,
            *recipe_command(
                tmp_path / "run", f"collector.total_frames={NUM_ENVS * STEPS}", f"logger.tracking_uri={uri}"
            ),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(workdir.iterdir()) == [], "nothing lands in the working directory"
    client, run_id = mlflow_run(tmp_path / "run")
    artifact_uri = client.get_run(run_id).info.artifact_uri
    assert artifact_uri.startswith((store / "mlartifacts").as_uri())
    assert (Path(artifact_uri.removeprefix("file://")) / "policy.pt").is_file()


@pytest.mark.slow
def test_kill_9_leaves_the_checkpoints_resumable_and_the_resume_logs_each_step_once(tmp_path):
    process = subprocess.Popen(
        [sys.executable, *recipe_command(tmp_path, "collector.total_frames=10_000_000", "checkpoint.every=2")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    for line in process.stdout:
        if "iteration 5," in line:  # logged to MLflow; the last checkpoint is iteration 4
            process.kill()
            break
    else:
        pytest.fail(f"the run ended (status {process.wait()}) before its fifth iteration")
    process.wait()
    client, killed_run = mlflow_run(tmp_path)
    assert client.get_run(killed_run).info.status == "RUNNING"  # nothing could close it
    latest = sorted((tmp_path / "checkpoints").glob("checkpoint-*"))[-1]
    assert latest.name == "checkpoint-000000000004"

    run(
        [
            sys.executable,
            *recipe_command(tmp_path, f"collector.total_frames={6 * NUM_ENVS * STEPS}", f"resume={latest}"),
        ]
    )
    assert client.get_run(killed_run).info.status == "KILLED"
    _, resumed_run = mlflow_run(tmp_path)  # run.json names the run that took over
    assert resumed_run != killed_run
    assert client.get_run(resumed_run).data.tags["diffrl.resumed_from"] == killed_run
    assert frames_logged(tmp_path) == [(step, step * NUM_ENVS * STEPS) for step in range(1, 7)]
    assert client.get_run(resumed_run).info.status == "FINISHED"
