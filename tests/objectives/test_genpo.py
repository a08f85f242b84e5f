"""GenPOLoss: exact ratio, hand-computed loss terms, gradients, learning signal, KL-adaptive lr."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.modules import ValueOperator
from torchrl.objectives import KLAdaptiveLR

from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.numerics import NumericalError
from diffrl.objectives.genpo import GenPOLoss
from diffrl.training import PPOUpdate

D, OBS, BATCH = 2, 3, 64


def as_float32(value: float) -> float:
    """TorchRL stores loss coefficients as float32 buffers: hand computations use the same numbers."""
    return float(torch.tensor(value, dtype=torch.float32))


def build(seed: int = 0, **loss_kwargs) -> tuple[GenPOActor, ValueOperator, GenPOLoss]:
    torch.manual_seed(seed)
    actor = GenPOActor(GenPOFlow(D, OBS, num_steps=3, hidden_sizes=[32, 32])).double()
    critic = ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"]).double()
    return actor, critic, GenPOLoss(actor, critic, **loss_kwargs).double()  # float64 clip bounds too


def rollout_batch(actor: GenPOActor, seed: int = 1) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(BATCH, OBS, generator=generator, dtype=torch.float64)
    batch = actor(TensorDict({"observation": obs}, batch_size=[BATCH]))
    batch["advantage"] = torch.randn(BATCH, 1, generator=generator, dtype=torch.float64)
    batch["value_target"] = torch.randn(BATCH, 1, generator=generator, dtype=torch.float64)
    batch["state_value"] = torch.randn(BATCH, 1, generator=generator, dtype=torch.float64)
    return batch


def test_ratio_is_one_at_the_rollout_parameters():
    actor, _, loss = build()
    out = loss(rollout_batch(actor))
    assert out["clip_fraction"].item() == 0.0
    assert abs(out["kl_approx"].item()) < 1e-12
    assert abs(out["kl_k3"].item()) < 1e-12
    assert abs(out["ESS"].item() - 1.0) < 1e-12


def test_loss_terms_match_a_hand_computed_case():
    """Stored log-probs shifted by known δ give ratio e^{−δ}; every term is recomputed by hand."""
    actor, critic, loss = build(compression_coeff=0.01, entropy_coeff=0.05)
    batch = rollout_batch(actor)
    delta = torch.linspace(-0.5, 0.5, BATCH, dtype=torch.float64)
    batch["action_log_prob"] = batch["action_log_prob"] + delta
    torch.manual_seed(123)
    out = loss(batch)

    ratio = torch.exp(-delta).unsqueeze(-1)
    advantage = batch["advantage"]
    eps = as_float32(0.2)
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - eps, 1 + eps) * advantage)
    torch.testing.assert_close(out["loss_objective"], -surrogate.mean(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["kl_approx"], delta.mean(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["kl_k3"], (torch.exp(-delta) - 1 + delta).mean(), rtol=0, atol=1e-10)
    outside = ((ratio < 1 - eps) | (ratio > 1 + eps)).double().mean()
    torch.testing.assert_close(out["clip_fraction"], outside.to(out["clip_fraction"].dtype), rtol=0, atol=1e-7)
    weights = torch.exp(-delta)
    torch.testing.assert_close(out["ESS"], weights.sum() ** 2 / (BATCH * (weights**2).sum()), rtol=0, atol=1e-10)

    # The same fresh noise the loss drew, replayed through the flow independently.
    torch.manual_seed(123)
    noise = torch.randn(BATCH, 2 * D, dtype=torch.float64)
    fresh = actor.flow(noise, batch["observation"])
    distance = (fresh[:, :D] - fresh[:, D:]).norm(dim=-1).mean()
    torch.testing.assert_close(out["loss_compression"], as_float32(0.01) * distance, rtol=0, atol=1e-10)
    gaussian = torch.distributions.Normal(0.0, 1.0).log_prob(noise).sum(-1) - 2 * 3 * D * math.log(0.95)
    torch.testing.assert_close(out["entropy"], -gaussian.mean(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["loss_entropy"], as_float32(0.05) * gaussian.mean(), rtol=0, atol=1e-10)

    value = critic.module(batch["observation"])
    clipped = batch["state_value"] + (value - batch["state_value"]).clamp(-as_float32(0.2), as_float32(0.2))
    target = batch["value_target"]
    expected_critic = torch.maximum((value - target) ** 2, (clipped - target) ** 2).mean()
    torch.testing.assert_close(out["loss_critic"], expected_critic, rtol=0, atol=1e-10)
    explained = 1 - (target - value).var(correction=0) / target.var(correction=0)
    torch.testing.assert_close(out["explained_variance"], explained.detach(), rtol=0, atol=1e-10)


def test_entropy_estimate_matches_the_doubled_space_constant():
    """E[−log π] = d(1 + log 2π) + 2·N·d·log p exactly; the estimate is within 4 standard errors."""
    actor, _, loss = build()
    batch = rollout_batch(actor)
    estimates = torch.stack([loss(batch)["entropy"] for _ in range(200)])
    exact = D * (1 + math.log(2 * math.pi)) + 2 * 3 * D * math.log(0.95)
    standard_error = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - exact) < 4 * standard_error


def test_gradients_reach_the_velocity_net_and_the_critic():
    actor, critic, loss = build()
    batch = rollout_batch(actor)
    with torch.no_grad():
        actor.flow.velocity_net.trunk[-1].weight.add_(0.1)  # move θ away from θ_old
    out = loss(batch)
    (out["loss_objective"] + out["loss_critic"] + out["loss_compression"]).backward()
    for name, parameter in list(actor.named_parameters()) + list(critic.named_parameters()):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_positive_advantage_steps_raise_the_likelihood_of_the_samples():
    actor, _, loss = build(compression_coeff=0.0)
    batch = rollout_batch(actor)
    batch["advantage"] = torch.ones(BATCH, 1, dtype=torch.float64)
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    before = actor.get_dist(batch).log_prob(batch["latent_action"]).mean().item()
    for _ in range(5):
        optimizer.zero_grad()
        loss(batch)["loss_objective"].backward()
        optimizer.step()
    after = actor.get_dist(batch).log_prob(batch["latent_action"]).mean().item()
    assert after > before + 1e-3


def test_kl_output_drives_the_kl_adaptive_learning_rate():
    """Stored log-probs shifted by a constant c script a k1 KL of exactly c per minibatch."""
    actor, _, loss = build()
    batch = rollout_batch(actor)
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    schedule = KLAdaptiveLR(optimizer, target_kl=0.01, factor=1.5, min_lr=1e-5, max_lr=1e-2)
    expected_lr = 1e-3
    for kl, scale in [(0.05, 1 / 1.5), (0.001, 1.5), (0.01, 1.0), (0.019, 1.0), (0.021, 1 / 1.5), (0.004, 1.5)]:
        scripted = batch.clone()
        scripted["action_log_prob"] = batch["action_log_prob"] + kl
        measured = loss(scripted)["kl_approx"]
        assert abs(measured.item() - kl) < 1e-10
        schedule.step(measured)
        expected_lr *= scale
        assert abs(optimizer.param_groups[0]["lr"] - expected_lr) < 1e-15
    for _ in range(40):  # the rule keeps the lr inside its bounds
        scripted["action_log_prob"] = batch["action_log_prob"] + 1.0
        schedule.step(loss(scripted)["kl_approx"])
    assert optimizer.param_groups[0]["lr"] == 1e-5


def test_non_finite_stored_log_prob_is_reported_with_context():
    actor, _, loss = build()
    batch = rollout_batch(actor)
    batch["action_log_prob"][7] = float("nan")
    with pytest.raises(NumericalError, match=r"not finite for 1 of 64 samples; first at index 7"):
        loss(batch)


def test_exploding_log_ratio_is_reported_not_clamped():
    actor, _, loss = build(max_abs_log_ratio=10.0)
    batch = rollout_batch(actor)
    batch["action_log_prob"] = batch["action_log_prob"] - 30.0
    with pytest.raises(NumericalError, match="max_abs_log_ratio"):
        loss(batch)


def test_keys_are_set_from_the_actor_and_configurable():
    torch.manual_seed(0)
    actor = GenPOActor(GenPOFlow(D, OBS, hidden_sizes=[8]), observation_key="policy", latent_key="z")
    critic = ValueOperator(nn.Linear(OBS, 1), in_keys=["policy"], out_keys=["v"])
    loss = GenPOLoss(actor, critic)
    loss.set_keys(value="v", advantage="adv")
    assert loss.tensor_keys.action == "z" and loss.tensor_keys.sample_log_prob == "action_log_prob"
    batch = actor(TensorDict({"policy": torch.randn(8, OBS)}, batch_size=[8]))
    batch["adv"], batch["value_target"], batch["v"] = torch.randn(8, 1), torch.randn(8, 1), torch.randn(8, 1)
    out = loss(batch)
    assert set(loss.out_keys) == set(out.keys())


def test_negative_coefficients_are_rejected():
    actor, critic, _ = build()
    with pytest.raises(ValueError, match="compression_coeff must be >= 0"):
        GenPOLoss(actor, critic, compression_coeff=-1.0)
    with pytest.raises(ValueError, match="entropy_coeff must be >= 0"):
        GenPOLoss(actor, critic, entropy_coeff=-1.0)


def test_the_value_clip_is_a_python_float_so_that_no_branch_reads_the_device():
    actor, critic, _ = build()
    clip_value = GenPOLoss(actor, critic, clip_value=0.3).clip_value
    assert type(clip_value) is float
    assert clip_value == pytest.approx(0.3)
    assert GenPOLoss(actor, critic, clip_value=None).clip_value is None
    assert "clip_value" not in dict(GenPOLoss(actor, critic).named_buffers())


def test_out_keys_can_be_set_and_narrowed():
    actor, critic, _ = build()
    loss = GenPOLoss(actor, critic)
    assert "loss_compression" in loss.out_keys and "loss_critic" in loss.out_keys
    loss.out_keys = ["loss_objective", "kl_approx"]
    assert loss.out_keys == ["loss_objective", "kl_approx"]
    loss.out_keys = None  # back to the loss's own list
    assert "loss_compression" in loss.out_keys

    batch = rollout_batch(actor)  # a whole rollout: select_out_keys's hook wants every in_key
    ended = torch.zeros(BATCH, 1, dtype=torch.bool)
    batch["next"] = TensorDict(
        {"observation": batch["observation"], "reward": batch["value_target"], "done": ended, "terminated": ended},
        batch_size=[BATCH],
    )
    assert {"loss_compression", "loss_critic"} <= set(loss(batch).keys())
    loss.select_out_keys("loss_objective", "kl_approx")
    assert set(loss(batch).keys()) == {"loss_objective", "kl_approx"}
    with pytest.raises(ValueError, match="select_out_keys applied: an update rule optimizes every loss_"):
        PPOUpdate(loss)


def test_an_advantage_without_its_trailing_dimension_is_a_clear_error():
    # TorchRL's ClipPPOLoss rejects it; without the check [B] against [B, 1] broadcasts to [B, B].
    actor, critic, _ = build()
    batch = actor(TensorDict({"observation": torch.randn(8, OBS, dtype=torch.float64)}, batch_size=[8]))
    batch["advantage"] = torch.randn(8, dtype=torch.float64)
    batch["value_target"], batch["state_value"] = torch.randn(8, 1).double(), torch.zeros(8, 1).double()
    with pytest.raises(ValueError, match=r"advantage has shape \(8,\) but the log-ratio \(8, 1\)"):
        GenPOLoss(actor, critic).double()(batch)


def test_a_stored_log_prob_of_another_shape_is_a_clear_error():
    # [B, 1] against the policy's [B] would broadcast the log-ratio to [B, B].
    actor, critic, _ = build()
    batch = actor(TensorDict({"observation": torch.randn(8, OBS, dtype=torch.float64)}, batch_size=[8]))
    batch["action_log_prob"] = batch["action_log_prob"].unsqueeze(-1)
    batch["advantage"] = torch.randn(8, 1, dtype=torch.float64)
    batch["value_target"], batch["state_value"] = torch.randn(8, 1).double(), torch.zeros(8, 1).double()
    with pytest.raises(ValueError, match=r"'action_log_prob' has shape \(8, 1\) but the policy's is \(8,\)"):
        GenPOLoss(actor, critic).double()(batch)


def test_a_single_far_outlier_is_left_out_of_the_surrogate_and_counted():
    """A converged flow can move one stored sample's log-likelihood by tens of nats: with a
    negative advantage PPO's unclipped term would explode; it is dropped (zero gradient) and counted."""
    actor, _, loss = build(max_abs_log_ratio=20.0, max_outlier_fraction=0.05)
    batch = rollout_batch(actor)
    batch["advantage"] = -torch.ones(BATCH, 1, dtype=torch.float64)
    batch["action_log_prob"][5] = batch["action_log_prob"][5] - 89.0  # ratio e^89 on sample 5
    out = loss(batch)
    assert abs(out["ratio_outlier_fraction"].item() - 1 / BATCH) < 1e-12
    # the other samples have ratio 1: each contributes −A = 1, the outlier 0
    torch.testing.assert_close(out["loss_objective"], torch.tensor((BATCH - 1) / BATCH, dtype=torch.float64))
    assert abs(out["kl_approx"].item()) < 1e-12  # the estimates use the samples in the surrogate
    out["loss_objective"].backward()
    assert all(torch.isfinite(p.grad).all() for p in actor.parameters() if p.grad is not None)


def test_compression_on_a_sub_batch_uses_the_first_states_with_the_same_noise():
    """With compression_batch_fraction = 0.25 the fresh samples are F(z[:R]; s[:R]), R = ⌈B/4⌉."""
    actor, _, loss = build(compression_batch_fraction=0.25)
    batch = rollout_batch(actor)
    torch.manual_seed(7)
    out = loss(batch)
    rows = math.ceil(BATCH / 4)
    torch.manual_seed(7)
    noise = torch.randn(BATCH, 2 * D, dtype=torch.float64)[:rows]
    fresh = actor.flow(noise, batch["observation"][:rows])
    distance = (fresh[:, :D] - fresh[:, D:]).norm(dim=-1).mean()
    torch.testing.assert_close(out["compression_distance"], distance, rtol=0, atol=1e-10)
    full = build(compression_batch_fraction=1.0)[2]
    torch.testing.assert_close(full(batch)["loss_objective"], out["loss_objective"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="compression_batch_fraction"):
        build(compression_batch_fraction=0.0)
