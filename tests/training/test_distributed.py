"""Two CPU ranks under torchrun (gloo): what must agree across ranks agrees bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("distributed")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run([*command, str(WORKER), str(out)], check=True, timeout=300)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


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
