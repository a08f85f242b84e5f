"""RunLock: one process per run directory, no fresh run over another run's files, stale staging cleared."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from diffrl.training.run_directory import RunDirectory
from diffrl.training.run_lock import RunDirectoryInUse, RunLock

HOLD_LOCK = """
import sys, time
from diffrl.training.run_directory import RunDirectory
from diffrl.training.run_lock import RunLock
lock = RunLock(RunDirectory(sys.argv[1]), resuming=False).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_with_the_holders_pid_and_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryInUse, match=rf"in use by process {holder.pid}: "):
            RunLock(RunDirectory(tmp_path), resuming=True).acquire()
    finally:
        holder.kill()  # as kill -9: no cleanup runs
        holder.wait()
    with RunLock(RunDirectory(tmp_path), resuming=True):  # the OS released the dead holder's lock
        assert (tmp_path / ".diffrl.lock").read_text() == str(os.getpid())


def test_a_fresh_run_refuses_another_runs_directory_and_says_how_to_resume(tmp_path):
    layout = RunDirectory(tmp_path)
    with RunLock(layout, resuming=False):  # an empty (or Hydra-only) directory is free
        pass
    layout.checkpoint(7).mkdir(parents=True)
    layout.run_info.write_text(json.dumps({"mlflow_run_id": "abc123", "tracking_uri": "sqlite:///x"}))
    with pytest.raises(RunDirectoryInUse) as refused:
        RunLock(layout, resuming=False).acquire()
    message = str(refused.value)
    assert f"hydra.run.dir={tmp_path} already holds another run (MLflow run abc123)" in message
    assert f"resume it with resume={layout.checkpoint(7)}" in message
    with RunLock(layout, resuming=True):  # resuming it is what the message proposes
        pass
    # Refused, the lock is released again: the next attempt is refused for the files, not the lock.
    with pytest.raises(RunDirectoryInUse, match="already holds another run"):
        RunLock(layout, resuming=False).acquire()


def test_a_store_alone_also_marks_the_directory_as_taken(tmp_path):
    RunDirectory(tmp_path).mlflow_db.write_bytes(b"")
    with pytest.raises(RunDirectoryInUse, match=r"\(mlflow.db\): choose another directory"):
        RunLock(RunDirectory(tmp_path), resuming=False).acquire()


def test_staging_left_by_a_killed_save_is_removed_and_checkpoints_are_kept(tmp_path):
    layout = RunDirectory(tmp_path)
    kept = layout.checkpoint(2)
    stale = layout.checkpoints / ".checkpoint-000000000004.stage-0123abcd"
    for directory in (kept, stale):
        (directory / "components").mkdir(parents=True)
    with RunLock(layout, resuming=True):
        assert kept.is_dir() and not stale.exists()


def test_an_unusable_directory_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirectoryInUse, match=rf"hydra.run.dir={blocker}/run cannot be used: "):
        RunLock(RunDirectory(blocker / "run"), resuming=False).acquire()
