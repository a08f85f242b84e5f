"""RunDirectory and checkpoint_to_resume: what ``resume=`` may name, checked before anything is built."""

from __future__ import annotations

import pytest
import torch
from torchrl.checkpoint import Checkpoint

from diffrl.training.run_directory import RunDirectory, checkpoint_to_resume


def test_resume_takes_a_checkpoint_or_a_run_directorys_latest_one(tmp_path):
    run = RunDirectory(tmp_path / "run")
    for iteration in (5, 10):
        Checkpoint(model=torch.nn.Linear(2, 1)).save(run.checkpoint(iteration))
    assert checkpoint_to_resume(run.checkpoint(5)) == run.checkpoint(5)
    assert checkpoint_to_resume(run.root) == run.checkpoint(10)
    assert RunDirectory.of_checkpoint(checkpoint_to_resume(run.root)).root == run.root.resolve()


def test_what_resume_cannot_continue_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"resume=.*missing: no such checkpoint"):
        checkpoint_to_resume(tmp_path / "missing")
    run = RunDirectory(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"a run directory without checkpoints"):
        checkpoint_to_resume(run.root)
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match=r"notes: not a TorchRL checkpoint \(no readable manifest\); name a run"):
        checkpoint_to_resume(tmp_path / "notes")
