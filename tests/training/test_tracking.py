"""MLflowTracker against a real MLflow server: fail fast when it is down at the start, go on when it dies mid-run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from diffrl.training.experiment import artifact_location
from diffrl.training.run_directory import RunDirectory
from diffrl.training.tracking import (
    MLflowTracker,
    default_tracking_uri,
    recorded_run,
    require_tracking_server,
    write_run_info,
)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(store: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--default-artifact-root",
            str(store / "art"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the server's workers die with it
    )
    require_tracking_server(f"http://127.0.0.1:{port}", timeout=120)
    return server


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def test_an_unreachable_server_is_one_error_within_the_timeout():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ValueError, match=rf"logger.tracking_uri={uri}: no MLflow server answered within 3 s"):
        require_tracking_server(uri, timeout=3)
    assert time.monotonic() - start < 10


def test_a_sqlite_store_in_a_missing_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match=rf"the directory {tmp_path}/missing does not exist"):
        require_tracking_server(f"sqlite:///{tmp_path}/missing/mlflow.db")
    require_tracking_server(f"sqlite:///{tmp_path}/mlflow.db")  # an existing directory is fine


@pytest.mark.slow
def test_a_server_that_dies_mid_run_costs_a_warning_and_the_metrics_arrive_at_the_end(tmp_path, caplog):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    buffer = tmp_path / "metrics_buffer.jsonl"
    try:
        tracker = MLflowTracker(uri, experiment="dies", run_name="t", buffer_path=buffer)
        tracker.log_metrics({"episode_return": 1.0}, step=1)
        stop(server)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="diffrl.training"):
            for step in (2, 3):
                tracker.log_metrics({"episode_return": float(step)}, step=step)
        assert time.monotonic() - start < 60  # MLflow's own retries would block for minutes
        assert caplog.text.count("training goes on") == 1
        assert len(buffer.read_text().splitlines()) == 2

        server = start_server(tmp_path, port)  # back before the run ends
        tracker.finish()
        history = MlflowClient(uri).get_metric_history(tracker.run_id, "episode_return")
        assert sorted((metric.step, metric.value) for metric in history) == [(1, 1.0), (2, 2.0), (3, 3.0)]
        assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FINISHED"
        assert not buffer.exists()
    finally:
        stop(server)


def test_a_resume_behind_the_runs_last_logged_step_continues_in_a_new_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = MLflowTracker(uri, experiment="resume", run_name="r")
    for step in range(1, 6):  # then kill -9: the run stays RUNNING, its last checkpoint was iteration 3
        killed.log_metrics({"frames": 10.0 * step}, step=step)

    resumed = MLflowTracker(uri, experiment="resume", run_id=killed.run_id, resume_iteration=3)
    client = MlflowClient(uri)
    assert resumed.replaced_run_id == killed.run_id != resumed.run_id
    assert client.get_run(killed.run_id).info.status == "KILLED"
    assert client.get_run(resumed.run_id).data.tags["diffrl.resumed_from"] == killed.run_id
    resumed.log_history([{"frames": 10.0 * step} for step in range(1, 4)])
    resumed.log_metrics({"frames": 40.0}, step=4)
    frames = sorted((metric.step, metric.value) for metric in client.get_metric_history(resumed.run_id, "frames"))
    assert frames == [(1, 10.0), (2, 20.0), (3, 30.0), (4, 40.0)]  # each step once

    # A resume at the last logged step (SIGTERM, Ctrl-C) continues the same run.
    again = MLflowTracker(uri, experiment="resume", run_id=resumed.run_id, resume_iteration=4)
    assert again.run_id == resumed.run_id and again.replaced_run_id is None
    assert client.get_run(resumed.run_id).info.status == "RUNNING"


def test_a_resume_logs_what_a_killed_process_had_only_buffered(tmp_path):
    uri, buffer = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "metrics_buffer.jsonl"
    killed = MLflowTracker(uri, experiment="resume", run_name="r", buffer_path=buffer)

    def store_down(*args, **kwargs):
        raise ConnectionError("store down")

    for step in range(1, 6):  # the store fails from iteration 3 on; kill -9 after the checkpoint of iteration 5
        if step == 3:
            killed.client.log_batch = store_down
        killed.log_metrics({"frames": 10.0 * step}, step=step)
    assert len(buffer.read_text().splitlines()) == 3

    resumed = MLflowTracker(uri, experiment="resume", run_id=killed.run_id, buffer_path=buffer, resume_iteration=5)
    assert resumed.replaced_run_id is None  # the run logged nothing past the checkpoint
    resumed.log_history([{"frames": 10.0 * step} for step in range(1, 6)])  # the checkpoint's history
    resumed.log_metrics({"frames": 60.0}, step=6)
    resumed.finish()
    frames = sorted(
        (metric.step, metric.value) for metric in MlflowClient(uri).get_metric_history(killed.run_id, "frames")
    )
    assert frames == [(step, 10.0 * step) for step in range(1, 7)]  # each step once, none lost
    assert not buffer.exists()


@pytest.mark.slow
def test_metrics_logged_after_the_server_died_for_good_land_in_the_local_fallback_store(tmp_path):
    port = free_port()
    uri, fallback = f"http://127.0.0.1:{port}", f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    (tmp_path / "run").mkdir()
    server = start_server(tmp_path, port)
    try:
        tracker = MLflowTracker(uri, experiment="gone", buffer_path=tmp_path / "buffer.jsonl", fallback_uri=fallback)
        tracker.log_metrics({"episode_return": 1.0}, step=1)
    finally:
        stop(server)
    for step in (2, 3):
        tracker.log_metrics({"episode_return": float(step)}, step=step)
    policy = tmp_path / "policy.pt"
    policy.write_bytes(b"weights")
    tracker.log_artifact(policy)  # returns: the file stays in the run directory
    tracker.finish()

    local = MlflowClient(fallback)
    (run,) = local.search_runs([local.get_experiment_by_name("gone").experiment_id])
    assert run.data.tags["diffrl.offline_copy_of"] == tracker.run_id
    history = local.get_metric_history(run.info.run_id, "episode_return")
    assert sorted((metric.step, metric.value) for metric in history) == [(2, 2.0), (3, 3.0)]
    assert (tmp_path / "buffer.jsonl").exists()  # and the plain-text copy stays


def run_in_own_store(root: Path, *, legacy: bool = False) -> str:
    """A run tracked into ``root``'s own store, as a recipe makes it, with one artifact; its run id.

    ``legacy`` writes ``run.json`` as diffrl did before it recorded the run directory.
    """
    layout = RunDirectory(root)
    root.mkdir(parents=True)
    uri = default_tracking_uri(root)
    tracker = MLflowTracker(uri, experiment="moving", artifact_location=artifact_location(None, uri, layout))
    layout.config.write_text("seed: 0\n")
    tracker.log_artifact(layout.config)
    tracker.finish()
    write_run_info(layout, tracker.run_id, uri)
    if legacy:
        layout.run_info.write_text(json.dumps({"mlflow_run_id": tracker.run_id, "tracking_uri": uri}))
    return tracker.run_id


@pytest.mark.parametrize("legacy", [False, True], ids=["run.json", "older run.json"])
@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_moved_or_copied_run_directory_tracks_into_its_own_store_and_artifacts(tmp_path, how, legacy):
    original, target = tmp_path / "original", tmp_path / "elsewhere" / "run"
    run_id = run_in_own_store(original, legacy=legacy)
    original_uri = default_tracking_uri(original)
    target.parent.mkdir()
    if how == "moved":
        original.rename(target)
    else:
        shutil.copytree(original, target)

    uri, recorded_id = recorded_run(RunDirectory(target))
    assert (uri, recorded_id) == (default_tracking_uri(target), run_id)
    client = MlflowClient(uri)
    own_artifacts = RunDirectory(target).mlflow_artifacts.resolve().as_uri()
    assert client.get_run(run_id).info.artifact_uri.startswith(f"{own_artifacts}/")
    assert [artifact.path for artifact in client.list_artifacts(run_id)] == ["config.yaml"]
    note = tmp_path / "note.txt"
    note.write_text("evaluated here")
    client.log_artifact(run_id, str(note))
    assert len(list((target / "mlartifacts").rglob("note.txt"))) == 1
    assert json.loads(RunDirectory(target).run_info.read_text())["run_dir"] == str(target.resolve())
    assert recorded_run(RunDirectory(target)) == (uri, run_id)  # relocated once, then read as is
    if how == "copied":  # the original is left as it was
        assert recorded_run(RunDirectory(original)) == (original_uri, run_id)
        assert (
            MlflowClient(original_uri)
            .get_run(run_id)
            .info.artifact_uri.startswith(f"{RunDirectory(original).mlflow_artifacts.resolve().as_uri()}/")
        )
        assert not list((original / "mlartifacts").rglob("note.txt"))


def test_a_run_tracked_into_another_store_keeps_it_when_its_directory_moves(tmp_path):
    store = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.root.mkdir()
    write_run_info(run_dir, "0123", store)
    run_dir.root.rename(tmp_path / "moved")
    assert recorded_run(RunDirectory(tmp_path / "moved")) == (store, "0123")


def test_an_unreadable_run_json_is_named(tmp_path):
    layout = RunDirectory(tmp_path)
    layout.run_info.write_text("")
    with pytest.raises(ValueError, match=r"run\.json: unreadable .*it names the run's MLflow run and store"):
        recorded_run(layout)
