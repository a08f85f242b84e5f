"""RunDirectory and checkpoint_to_resume: what ``resume=`` may name, checked before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchrl.checkpoint import Checkpoint

from diffrl.training.run_directory import RunDirectory, checkpoint_to_resume

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("names", ["the run directory", "a checkpoint"])
def test_a_resumed_recipe_runs_in_the_run_directory_it_resumes(tmp_path, names):
    """Hydra's run directory (where its log goes and the stop message looks) is the resumed run's own."""
    from hydra import compose, initialize_config_dir

    from diffrl.training.recipe import register_configs

    run = RunDirectory(tmp_path / "run")
    Checkpoint(model=torch.nn.Linear(2, 1)).save(run.checkpoint(3))
    resume = run.root if names == "the run directory" else run.checkpoint(3)
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "recipes" / "config"), version_base=None):
        cfg = compose("genpo_isaaclab", overrides=[f"resume={resume}"], return_hydra_config=True)
    assert Path(cfg.hydra.run.dir) == run.root.resolve()


def test_set_aside_moves_the_later_checkpoints_and_the_policy_and_keeps_the_rest(tmp_path):
    run = RunDirectory(tmp_path / "run")
    for iteration in (2, 3, 4):
        Checkpoint(model=torch.nn.Linear(2, 1)).save(run.checkpoint(iteration))
    run.policy.write_bytes(b"final policy of iteration 4")
    assert run.set_aside_later_than(4) is None and run.policy.exists()  # resuming from the latest: nothing
    aside = run.set_aside_later_than(2)
    assert aside.parent == run.root / "abandoned" and aside.name.endswith("-after-2")
    assert run.latest_checkpoint() == run.checkpoint(2)
    assert sorted(path.name for path in (aside / "checkpoints").iterdir()) == [
        run.checkpoint(3).name,
        run.checkpoint(4).name,
    ]
    assert (aside / "policy.pt").read_bytes() == b"final policy of iteration 4" and not run.policy.exists()
    assert Checkpoint.is_checkpoint(aside / "checkpoints" / run.checkpoint(4).name)
