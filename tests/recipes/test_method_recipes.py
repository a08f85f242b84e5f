"""TruDi (as its authors built it), REPPO, TruDi-PPO, DPPO, FPO++ and GenPO with a learnable volume end to end: each
recipe learns Isaac-Cartpole (CPU, offline assets) and lands its diagnostics in MLflow. GenPO and PPO have their own
files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from recipe_runs import metric_history, train_recipe

from diffrl.deploy.policy_loading import load_policy

FRAMES_PER_ITERATION = 256 * 16  # the Cartpole preset: 256 envs x 16 steps
PATHWISE_METRICS = (
    "loss_actor", "loss_critic", "loss_critic_aux", "loss_alpha", "loss_lambda", "path_kl", "path_kl_max",
    "trust_region_fraction", "alpha", "lagrange_multiplier", "entropy_estimate", "q_value", "reward_scale",
)  # fmt: skip
RISE_FROM_LOWEST = {"fpo"}
# method -> (recipe and the overrides that select the method, iterations, its diagnostics, its update rule)
METHODS = {
    "trudi": (["trudi_isaaclab.py"], 30, PATHWISE_METRICS, "pathwise_update.PathwiseUpdate"),
    "reppo": (["reppo_isaaclab.py"], 30, PATHWISE_METRICS, "pathwise_update.PathwiseUpdate"),
    "trudi_ppo": (
        ["trudi_isaaclab.py", "algorithm=trudi_ppo"],
        40,
        ("chain_kl", "chain_kl_projected", "projected_fraction", "loss_trust_region", "kl_approx"),
        "ppo_update.PPOUpdate",
    ),
    "dppo": (
        ["dppo_isaaclab.py"],
        40,
        ("kl_approx", "step_kl_approx", "clip_fraction", "clip_fraction_1", "clip_fraction_5"),
        "ppo_update.PPOUpdate",
    ),
    # FPO++'s own settings (trust region 0.05, 16 epochs) are for 4096 envs x 1500 iterations; within this
    # test's budget it learns with PPO's trust region and schedule (docs/fpo.md).
    "fpo": (
        ["fpo_isaaclab.py", "algorithm.loss.clip_epsilon=0.2", "trainer.num_epochs=5", "trainer.ema_warmup_updates=30"],
        60,
        ("clip_fraction", "mean_ratio_deviation", "cfm_loss", "ratio_cap_fraction", "explained_variance"),
        "ppo_update.PPOUpdate",
    ),
    "genpo_volume": (
        ["genpo_isaaclab.py", "algorithm=genpo_volume"],
        40,
        ("kl_approx", "entropy", "compression_distance", "clip_fraction"),
        "ppo_update.PPOUpdate",
    ),
}


def train(recipe: list[str], run_dir: Path, iterations: int) -> tuple[MlflowClient, str]:
    script, *selection = recipe
    return train_recipe(script, run_dir, *selection, f"collector.total_frames={iterations * FRAMES_PER_ITERATION}")


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_recipe_learns_isaac_cartpole_and_tracks_its_trust_region(method, tmp_path):
    recipe, iterations, diagnostics, update_rule = METHODS[method]
    client, run_id = train(recipe, tmp_path / method, iterations)
    returns = metric_history(client, run_id, "episode_return")
    means = [sum(returns[i : i + 5]) / 5 for i in range(len(returns) - 4)]  # of 5 iterations
    # A random policy scores about -2 on Cartpole, balancing 300 steps about 4.9. The first finished
    # episodes are the shortest, so the curve often dips before it rises; FPO++, the slowest learner
    # here, is held to its rise from that dip, the rest to the first 5.
    baseline = min(means) if method in RISE_FROM_LOWEST else means[0]
    assert means[-1] > baseline + 1.5, returns
    metrics = client.get_run(run_id).data.metrics
    for key in diagnostics:
        assert math.isfinite(metrics[key]), key
    if "trust_region_fraction" in diagnostics:
        assert 0 <= metrics["trust_region_fraction"] <= 1
    params = client.get_run(run_id).data.params
    assert params["trainer._target_"] == f"diffrl.training.{update_rule}"
    if method == "fpo":  # the deployed policy is the weight average, from policy.pt and from a checkpoint alike
        run_dir = tmp_path / method
        from_policy = load_policy(run_dir).actor.state_dict()
        from_checkpoint = load_policy(sorted((run_dir / "checkpoints").glob("checkpoint-*"))[-1]).actor.state_dict()
        assert all(torch.equal(from_policy[key], from_checkpoint[key]) for key in from_policy)
