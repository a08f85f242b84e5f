"""Two CPU ranks under torchrun (gloo): what must agree across ranks agrees bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")


def run_ranks(out: Path, *arguments: str) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([*command, str(WORKER), str(out), *arguments], check=True, timeout=300)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return run_ranks(tmp_path_factory.mktemp("distributed"))


@pytest.mark.slow
def test_two_ranks_ran_on_different_data(ranks):
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    # Own env seeds: the ranks' first observations differ, so agreement below is not trivial.
    assert not torch.equal(ranks[0]["first_observations"], ranks[1]["first_observations"])


@pytest.mark.slow
def test_parameters_learning_rate_and_statistics_are_identical_across_ranks(ranks):
    first, second = ranks
    assert torch.equal(first["initial"], second["initial"]), "rank 0's initial weights were broadcast"
    assert not torch.equal(first["parameters"], first["initial"]), "training changed the parameters"
    assert torch.equal(first["parameters"], second["parameters"])
    assert first["learning_rate"] == second["learning_rate"]
    for first_stats, second_stats in zip(first["statistics"], second["statistics"], strict=True):
        assert torch.equal(first_stats["observation"], second_stats["observation"])


@pytest.mark.slow
def test_statistics_count_every_rank_and_metrics_are_global(ranks):
    count = ranks[0]["statistics"][0]["observation"]
    # Per rank: the first reset of 4 envs, 3 rollouts of 16 steps x 4 envs, and the reset
    # observations of the 4 envs whose 20-step episodes end at steps 20 and 40; both ranks merged.
    assert int(count) == 2 * (4 + 3 * 16 * 4 + 2 * 4)
    assert [entry["frames"] for entry in ranks[0]["history"]] == [128.0, 256.0, 384.0]
    assert ranks[0]["history"][-1]["kl_approx"] == ranks[1]["history"][-1]["kl_approx"]


@pytest.mark.slow
def test_a_checkpoint_on_the_last_iteration_ends_every_rank(ranks):
    # checkpoint_every = the iteration count: had a rank other than 0 not recorded that save, it would have
    # entered the closing save's gather alone, and torchrun would have failed before writing the ranks' files.
    assert ranks[0]["checkpoints"][-1] == "checkpoint-000000000003"


@pytest.mark.slow
def test_pathwise_ranks_share_the_reward_scale_and_resume_each_ranks_own_returns(tmp_path):
    """TruDi under torchrun: one reward scale from every rank's returns, and a resume from iteration 2 of 3
    that equals the uninterrupted run on each rank (its envs' running discounted returns included)."""
    uninterrupted = run_ranks(tmp_path / "uninterrupted", "pathwise")
    assert uninterrupted[0]["reward_scale"] == uninterrupted[1]["reward_scale"] != 1.0
    assert not torch.equal(uninterrupted[0]["running_returns"], uninterrupted[1]["running_returns"])  # own envs
    checkpoint = tmp_path / "uninterrupted" / "checkpoints" / "checkpoint-000000000002"
    resumed = run_ranks(tmp_path / "resumed", "pathwise", str(checkpoint))
    for whole, continued in zip(uninterrupted, resumed, strict=True):
        assert continued["reward_scale"] == whole["reward_scale"]
        assert torch.equal(continued["running_returns"], whole["running_returns"])
        assert torch.equal(continued["parameters"], whole["parameters"])
