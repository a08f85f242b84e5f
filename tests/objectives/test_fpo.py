"""FPO++'s loss: the per-pair ratio is exactly 1 at the rollout policy, ASPO against hand-computed numbers on
both advantage signs, the straight-through cap and the CFM-loss clamps, and its errors."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import ClipPPOLoss

from diffrl.modules import CFMFlow, FPOActor, GaussianActor, make_value_network
from diffrl.objectives import FPOPlusPlusLoss
from diffrl.objectives.fpo import clamp_straight_through, trust_region_objective
from diffrl.training import PPOUpdate


def make_loss(**kwargs) -> FPOPlusPlusLoss:
    torch.manual_seed(0)
    actor = FPOActor(CFMFlow(action_dim=2, obs_dim=3, hidden_sizes=[16, 16], num_steps=4), num_cfm_pairs=2)
    critic = make_value_network(3, [16])
    return FPOPlusPlusLoss(actor.double(), critic.double(), **kwargs)


def rollout(loss: FPOPlusPlusLoss, advantage: list[float]) -> TensorDict:
    size = len(advantage)
    batch = TensorDict({"observation": torch.randn(size, 3, dtype=torch.float64)}, batch_size=[size])
    batch = loss.actor_network(batch)
    batch["advantage"] = torch.tensor(advantage, dtype=torch.float64).unsqueeze(-1)
    batch["value_target"] = torch.randn(size, 1, dtype=torch.float64)
    return batch


def test_every_ratio_is_exactly_one_at_the_rollout_policy_and_the_loss_is_minus_the_mean_advantage():
    loss = make_loss()
    batch = rollout(loss, [1.5, -0.5, 2.0, -1.0])
    out = loss(batch)
    assert float(out["mean_ratio_deviation"]) == 0.0 and float(out["max_ratio"]) == 1.0
    assert float(out["clip_fraction"]) == 0.0 and float(out["mean_log_ratio"]) == 0.0
    # At ρ = 1 both sides of ASPO are ρA = A.
    assert float(out["loss_objective"]) == -batch["advantage"].mean().item()


def test_a_minibatch_of_the_rollout_gives_ratio_one_to_round_off():
    loss = make_loss()
    batch = rollout(loss, [1.0] * 64)
    out = loss(batch[torch.randperm(64)[:16]])
    assert float(out["mean_ratio_deviation"]) < 1e-12


def test_aspo_matches_a_hand_computation_on_both_advantage_signs():
    loss = make_loss(clip_epsilon=0.05)
    batch = rollout(loss, [2.0, -1.0])
    with torch.no_grad():
        new = loss.actor_network.cfm_loss(batch, batch["action"], batch["cfm_noise"], batch["cfm_time"])
    # Stored losses chosen so that the pairs' ratios are ρ = 1.2 and 0.9 for both samples.
    batch["cfm_loss"] = new + torch.tensor([math.log(1.2), math.log(0.9)], dtype=torch.float64)
    out = loss(batch)
    # A = 2 > 0 (PPO clip): min(2.4, 1.05·2) = 2.1, min(1.8, 0.95·2) = 1.8.
    # A = −1 ≤ 0 (SPO): −1.2 − 1/(2·0.05)·0.2² = −1.6, −0.9 − 10·0.1² = −1.0.
    expected = -(2.1 + 1.8 - 1.6 - 1.0) / 4
    assert float(out["loss_objective"]) == pytest.approx(expected, abs=1e-12)
    assert float(out["clip_fraction"]) == 1.0  # every |ρ − 1| > 0.05
    assert float(out["max_ratio"]) == pytest.approx(1.2, abs=1e-12)
    assert float(out["mean_ratio_deviation"]) == pytest.approx(0.15, abs=1e-12)


@pytest.mark.parametrize("mode", ["ppo", "spo", "aspo"])
def test_trust_region_objective_by_hand(mode):
    ratio = torch.tensor([1.2, 0.9, 1.2, 0.9], dtype=torch.float64)
    advantage = torch.tensor([2.0, 2.0, -1.0, -1.0], dtype=torch.float64)
    clipped = [2.1, 1.8, -1.2, -0.95]  # min(ρA, clip(ρ, 0.95, 1.05)A)
    penalized = [2.4 - 20 * 0.04, 1.8 - 20 * 0.01, -1.6, -1.0]  # ρA − |A|/0.1·(ρ − 1)²
    expected = {"ppo": clipped, "spo": penalized, "aspo": clipped[:2] + penalized[2:]}[mode]
    result = trust_region_objective(ratio, advantage, 0.05, mode)
    torch.testing.assert_close(result, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_the_log_ratio_cap_is_straight_through():
    x = torch.tensor([3.0, 12.0], dtype=torch.float64, requires_grad=True)
    capped = clamp_straight_through(x, 10.0)
    assert capped.tolist() == [3.0, 10.0]
    capped.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]


def test_a_pair_past_the_cap_counts_and_keeps_its_gradient():
    loss = make_loss(max_log_ratio=0.1, cfm_loss_clamp=None, negative_advantage_cfm_loss_clamp=None)
    batch = rollout(loss, [1.0, 1.0])
    with torch.no_grad():
        new = loss.actor_network.cfm_loss(batch, batch["action"], batch["cfm_noise"], batch["cfm_time"])
    batch["cfm_loss"] = new + torch.tensor([0.5, 0.0], dtype=torch.float64)  # the first pair's log-ratio 0.5 > 0.1
    out = loss(batch)
    assert float(out["ratio_cap_fraction"]) == 0.5
    assert float(out["max_ratio"]) == pytest.approx(math.exp(0.1), abs=1e-12)


def test_cfm_losses_above_the_clamp_are_counted_and_carry_no_gradient():
    loss = make_loss(cfm_loss_clamp=1e-6, negative_advantage_cfm_loss_clamp=None)
    batch = rollout(loss, [1.0, -1.0])
    out = loss(batch)
    assert float(out["cfm_loss_clamp_fraction"]) == 1.0
    assert float(out["mean_log_ratio"]) == 0.0  # both sides clamped to the same value
    out["loss_objective"].backward()
    assert all(p.grad is None or not p.grad.any() for p in loss.actor_network.parameters())


def test_the_negative_advantage_clamp_acts_only_where_the_advantage_is_negative():
    loss = make_loss(cfm_loss_clamp=None, negative_advantage_cfm_loss_clamp=1e-6)
    batch = rollout(loss, [1.0, -1.0])
    with torch.no_grad():
        new = loss.actor_network.cfm_loss(batch, batch["action"], batch["cfm_noise"], batch["cfm_time"])
    out = loss(batch)
    # A > 0: ratio 1; A < 0: ℓ_old − min(ℓ_θ, 1e-6) = ℓ_old − 1e-6.
    expected_log_ratio = torch.cat([torch.zeros(2), new[1] - 1e-6]).mean()
    assert float(out["mean_log_ratio"]) == pytest.approx(float(expected_log_ratio), abs=1e-12)


def test_shape_errors_are_named():
    loss = make_loss()
    batch = rollout(loss, [1.0, -1.0])
    bad = batch.clone()
    bad["cfm_loss"] = bad["cfm_loss"][..., :1]
    with pytest.raises(ValueError, match="stored CFM losses"):
        loss(bad)
    bad = batch.clone()
    bad["advantage"] = bad["advantage"].squeeze(-1)
    with pytest.raises(ValueError, match="advantage has shape"):
        loss(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"trust_region": "trpo"}, "trust_region"),
        ({"clip_epsilon": 0.0}, "clip_epsilon"),
        ({"cfm_loss_clamp": 0.0}, "cfm_loss_clamp"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_loss(**kwargs)


def test_the_kl_adaptive_rate_needs_a_loss_that_reports_a_kl():
    with pytest.raises(ValueError, match="adaptive_lr=false"):
        PPOUpdate(make_loss(), adaptive_lr=True)
    PPOUpdate(make_loss(), adaptive_lr=False)
    PPOUpdate(ClipPPOLoss(GaussianActor(2, 3, [8]), make_value_network(3, [8])), adaptive_lr=True)


def test_training_steps_lower_the_cfm_loss_of_positive_advantage_actions():
    """The learning signal: with all advantages positive, FPO++ raises the surrogate likelihood of the
    stored actions, i.e. lowers their CFM loss on the stored pairs (ratio > 1)."""
    loss = make_loss(clip_epsilon=0.2)
    batch = rollout(loss, [1.0] * 32)
    optimizer = torch.optim.Adam(loss.actor_network.parameters(), lr=1e-3)
    for _ in range(10):
        out = loss(batch)
        optimizer.zero_grad()
        out["loss_objective"].backward()
        optimizer.step()
    out = loss(batch)
    assert float(out["mean_log_ratio"]) > 0.01
