"""TruDiPPOLoss: ratio at θ_old, hand-computed loss terms, trust region, gradients, errors, keys."""

from __future__ import annotations

import math

import pytest
import torch
from reference_math import cosine_alphas_cumprod
from tensordict import TensorDict
from torch import nn
from torch.distributions import Normal, kl_divergence
from torchrl.modules import ValueOperator

from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.trudi_actor import TruDiActor
from diffrl.numerics import NumericalError
from diffrl.objectives.trudi_ppo import TruDiPPOLoss

D, OBS, K, BATCH, MIN_STD = 2, 3, 3, 64, 0.1


def as_float32(value: float) -> float:
    """TorchRL stores loss coefficients as float32 buffers: hand computations use the same numbers."""
    return float(torch.tensor(value, dtype=torch.float32))


def build(
    seed: int = 0, learn_std: bool = False, parameterization: str = "epsilon", **loss_kwargs
) -> tuple[TruDiActor, ValueOperator, TruDiPPOLoss]:
    torch.manual_seed(seed)
    actor = TruDiActor(
        DenoisingChain(
            D,
            OBS,
            num_steps=K,
            hidden_sizes=[32, 32],
            min_std=MIN_STD,
            learn_std=learn_std,
            parameterization=parameterization,
            denoised_clip=None,
        )
    ).double()
    critic = ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"]).double()
    return actor, critic, TruDiPPOLoss(actor, critic, **loss_kwargs).double()  # float64 clip bounds too


def rollout_batch(actor: TruDiActor, seed: int = 1) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(BATCH, OBS, generator=generator, dtype=torch.float64)
    batch = actor(TensorDict({"observation": obs}, batch_size=[BATCH]))
    batch["advantage"] = torch.randn(BATCH, 1, generator=generator, dtype=torch.float64)
    batch["value_target"] = torch.randn(BATCH, 1, generator=generator, dtype=torch.float64)
    batch["state_value"] = torch.randn(BATCH, 1, generator=generator, dtype=torch.float64)
    return batch


def move_policy(actor: TruDiActor, amount: float = 0.002) -> None:
    """Perturb the output layer. The ε parameterization is stiff (the last step multiplies ε̂ by ≈ 31): a small
    amount already moves the chain KL over a wide range (median ≈ 0.2 for the default)."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        weight = actor.chain.net.trunk[-1].weight
        weight.add_(amount * torch.randn(weight.shape, generator=generator, dtype=weight.dtype))
        actor.chain.net.trunk[-1].bias.add_(amount)


def reference_steps(actor: TruDiActor, chain: torch.Tensor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step means [B, K, d] (Ho et al. eq. 11 with the net's ε̂), stds [K] (floored posterior), chain order."""
    alpha_bar = cosine_alphas_cumprod(K)
    means, stds = [], []
    for row in range(K):
        k = K - row
        beta = 1 - alpha_bar[k] / alpha_bar[k - 1]
        eps = actor.chain.net(chain[:, row], obs, torch.tensor(k / K, dtype=torch.float64))
        means.append((chain[:, row] - beta / math.sqrt(1 - alpha_bar[k]) * eps) / math.sqrt(1 - beta))
        stds.append(max(math.sqrt((1 - alpha_bar[k - 1]) / (1 - alpha_bar[k]) * beta), MIN_STD))
    return torch.stack(means, 1), torch.tensor(stds, dtype=torch.float64)


def test_ratio_is_one_and_nothing_is_projected_at_the_rollout_parameters():
    actor, _, loss = build()
    out = loss(rollout_batch(actor))
    assert out["clip_fraction"].item() == 0.0 and out["projected_fraction"].item() == 0.0
    for key in ("kl_approx", "kl_k3", "chain_kl", "chain_kl_projected", "loss_trust_region"):
        assert abs(out[key].item()) < 1e-12, key
    assert abs(out["ESS"].item() - 1.0) < 1e-12


def test_outputs_are_the_declared_scalars():
    actor, _, loss = build(learn_std=True, entropy_coeff=0.01)
    out = loss(rollout_batch(actor))
    assert set(out.keys()) == set(loss.out_keys)
    assert {f"step_kl_{k}" for k in range(1, K + 1)} <= set(out.keys())
    assert all(value.shape == () for value in out.values())


def projected_by_hand(mean: torch.Tensor, old_mean: torch.Tensor, sigma: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The whole-chain projection at a fixed σ: each chain's mean step scaled by √(ε / KL) where its KL exceeds ε."""
    chain_kl = ((mean - old_mean) ** 2 / (2 * sigma**2)).sum((-2, -1))
    scale = torch.where(chain_kl > epsilon, (epsilon / chain_kl).sqrt(), torch.ones_like(chain_kl))
    return old_mean + (mean - old_mean) * scale[:, None, None]


def test_loss_terms_match_a_hand_computed_case():
    """θ moved away from θ_old, small ε: every term recomputed from the net, the schedule formulas and Normal."""
    epsilon, alpha = 0.2, 0.5
    actor, critic, loss = build(trust_region_kl=epsilon, regression_coeff=alpha)
    batch = rollout_batch(actor)
    chain, obs = batch["denoising_chain"], batch["observation"]
    old_mean = batch["denoising_means"]
    with torch.no_grad():
        torch.testing.assert_close(old_mean, reference_steps(actor, chain, obs)[0], rtol=0, atol=1e-10)
        move_policy(actor)
        mean, std = reference_steps(actor, chain, obs)
    out = loss(batch)

    sigma = std[None, :, None]
    step_kl = ((mean - old_mean) ** 2 / (2 * sigma**2)).sum(-1)  # [B, K]
    chain_kl = step_kl.sum(-1)
    outside = chain_kl > epsilon
    assert outside.any() and (~outside).any(), "the case must exercise both branches"
    projected = projected_by_hand(mean, old_mean, sigma, epsilon)
    log_projected = Normal(projected, sigma).log_prob(chain[:, 1:]).sum((-2, -1))
    log_ratio = log_projected - batch["action_log_prob"]
    ratio = log_ratio.exp().unsqueeze(-1)
    advantage = batch["advantage"]
    clip = as_float32(0.2)
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
    torch.testing.assert_close(out["loss_objective"], -surrogate.mean(), rtol=0, atol=1e-10)
    regression = ((mean - projected) ** 2 / (2 * sigma**2)).sum((-2, -1))
    torch.testing.assert_close(out["loss_trust_region"], as_float32(alpha) * regression.mean(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["kl_approx"], -log_ratio.mean(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["kl_k3"], (log_ratio.exp() - 1 - log_ratio).mean(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["chain_kl"], chain_kl.mean(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["chain_kl_projected"], chain_kl.clamp(max=epsilon).mean(), rtol=1e-8, atol=0)
    torch.testing.assert_close(out["projected_fraction"], outside.float().mean(), rtol=0, atol=0)
    for row in range(K):
        torch.testing.assert_close(out[f"step_kl_{K - row}"], step_kl[:, row].mean(), rtol=0, atol=1e-10)
    outside_clip = ((ratio < 1 - clip) | (ratio > 1 + clip)).float().mean()
    torch.testing.assert_close(out["clip_fraction"], outside_clip.to(out["clip_fraction"].dtype), rtol=0, atol=1e-7)
    entropy = (K + 1) * D * 0.5 * math.log(2 * math.pi * math.e) + D * std.log().sum()
    torch.testing.assert_close(out["entropy"], entropy, rtol=0, atol=1e-10)

    value = critic.module(obs)
    clipped = batch["state_value"] + (value - batch["state_value"]).clamp(-as_float32(0.2), as_float32(0.2))
    target = batch["value_target"]
    expected_critic = torch.maximum((value - target) ** 2, (clipped - target) ** 2).mean()
    torch.testing.assert_close(out["loss_critic"], expected_critic, rtol=0, atol=1e-10)


def test_chain_kl_with_learned_stds_is_the_new_steps_kl_from_the_old_at_the_stored_chain():
    """``chain_kl`` = mean over states of Σ_k KL(π_θ,k ‖ π_old,k) at the rollout's x_k, by torch's Normal KL.

    With learned stds the per-step KL is not symmetric: the reverse direction is computed too, to show the test
    would see the arguments swapped.
    """
    epsilon = 0.2
    actor, _, loss = build(learn_std=True, trust_region_kl=epsilon)
    batch = rollout_batch(actor)
    chain, obs = batch["denoising_chain"], batch["observation"]
    with torch.no_grad():
        move_policy(actor)
        actor.chain.log_std_offset.add_(0.05 * torch.randn(actor.chain.log_std_offset.shape, dtype=torch.float64))
        mean, _ = reference_steps(actor, chain, obs)
        std = MIN_STD + actor.chain.log_std_offset.exp()  # [K, d]
    out = loss(batch)

    new, old = Normal(mean, std), Normal(batch["denoising_means"], batch["denoising_stds"])
    step_kl = kl_divergence(new, old).sum(-1)  # [B, K]
    chain_kl = step_kl.sum(-1)
    reverse = kl_divergence(old, new).sum((-2, -1))
    assert (chain_kl - reverse).abs().mean() > 1e-3, "the directions must differ far beyond the tolerance"
    outside = chain_kl > epsilon
    assert outside.any() and (~outside).any(), "the case must exercise both branches"
    torch.testing.assert_close(out["chain_kl"], chain_kl.mean(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["projected_fraction"], outside.float().mean(), rtol=0, atol=0)
    for row in range(K):
        torch.testing.assert_close(out[f"step_kl_{K - row}"], step_kl[:, row].mean(), rtol=0, atol=1e-10)
    # The projection meets the budget on the states outside it and is the identity inside.
    torch.testing.assert_close(out["chain_kl_projected"], chain_kl.clamp(max=epsilon).mean(), rtol=1e-6, atol=0)


def test_unclipped_surrogate_when_clip_epsilon_is_none():
    actor, _, loss = build(clip_epsilon=None, trust_region_kl=0.2)
    batch = rollout_batch(actor)
    move_policy(actor)
    out = loss(batch)
    assert out["clip_fraction"].item() == 0.0
    with torch.no_grad():
        mean, std = reference_steps(actor, batch["denoising_chain"], batch["observation"])
    sigma = std[None, :, None]
    projected = projected_by_hand(mean, batch["denoising_means"], sigma, 0.2)
    log_p = Normal(projected, sigma).log_prob(batch["denoising_chain"][:, 1:]).sum((-2, -1))
    ratio = (log_p - batch["action_log_prob"]).exp().unsqueeze(-1)
    torch.testing.assert_close(out["loss_objective"], -(ratio * batch["advantage"]).mean(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("learn_std", [False, True])
def test_projected_policy_stays_inside_the_budget_however_far_the_network_moves(learn_std):
    actor, _, loss = build(learn_std=learn_std, trust_region_kl=0.05)
    batch = rollout_batch(actor)
    move_policy(actor, 1.0)
    if learn_std:
        with torch.no_grad():
            actor.chain.log_std_offset.add_(0.5)
    dist = actor.get_dist(batch)
    mean = dist.step_means(batch["denoising_chain"]).mean
    projected_mean, projected_std = loss.project(mean, dist.stds, batch["denoising_means"], batch["denoising_stds"])
    kl = torch.distributions.kl_divergence(
        Normal(projected_mean, projected_std), Normal(batch["denoising_means"], batch["denoising_stds"])
    ).sum((-2, -1))
    assert (kl <= 0.05 * (1 + 1e-6)).all()
    out = loss(batch)
    assert out["projected_fraction"].item() == 1.0 and out["chain_kl"].item() > 0.05
    assert out["chain_kl_projected"].item() <= 0.05 * (1 + 1e-6)


@pytest.mark.parametrize("learn_std", [False, True])
def test_gradients_reach_the_mean_net_the_std_and_the_critic(learn_std):
    actor, critic, loss = build(learn_std=learn_std, trust_region_kl=0.2)
    batch = rollout_batch(actor)
    move_policy(actor)  # θ ≠ θ_old: some states projected, some not
    out = loss(batch)
    assert 0 < out["projected_fraction"].item() < 1
    sum(value for key, value in out.items() if key.startswith("loss_")).backward()
    for name, parameter in list(actor.named_parameters()) + list(critic.named_parameters()):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_positive_advantage_steps_raise_the_likelihood_of_the_samples():
    # The direct-mean parameterization: with ε̂ amplified ≈ 31× at the last step, Adam's first steps at this lr
    # overshoot the network's own likelihood (the projected policy stays bounded, the network does not).
    actor, _, loss = build(parameterization="mean")
    batch = rollout_batch(actor)
    batch["advantage"] = torch.ones(BATCH, 1, dtype=torch.float64)
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    before = actor.get_dist(batch).log_prob(batch["denoising_chain"]).mean().item()
    for _ in range(5):
        optimizer.zero_grad()
        out = loss(batch)
        (out["loss_objective"] + out["loss_trust_region"]).backward()
        optimizer.step()
    after = actor.get_dist(batch).log_prob(batch["denoising_chain"]).mean().item()
    assert after > before + 1e-3


def test_non_finite_stored_log_prob_is_reported_with_context():
    actor, _, loss = build()
    batch = rollout_batch(actor)
    batch["action_log_prob"][7] = float("nan")
    with pytest.raises(NumericalError, match=r"not finite for 1 of 64 samples; first at index 7"):
        loss(batch)


def test_non_finite_stored_means_are_reported_with_context():
    actor, _, loss = build()
    batch = rollout_batch(actor)
    batch["denoising_means"][5, 1, 0] = float("inf")
    with pytest.raises(
        NumericalError, match=r"stored rollout means is not finite for 1 of 64 samples; first at index 5"
    ):
        loss(batch)


def test_exploding_log_ratio_is_reported_not_clamped():
    actor, _, loss = build(max_abs_log_ratio=10.0)
    batch = rollout_batch(actor)
    batch["action_log_prob"] = batch["action_log_prob"] - 30.0
    with pytest.raises(NumericalError, match="max_abs_log_ratio"):
        loss(batch)


def test_keys_are_set_from_the_actor_and_configurable():
    torch.manual_seed(0)
    actor = TruDiActor(
        DenoisingChain(D, OBS, num_steps=K, hidden_sizes=[8]), observation_key="policy", chain_key="z", means_key="m"
    )
    critic = ValueOperator(nn.Linear(OBS, 1), in_keys=["policy"], out_keys=["v"])
    loss = TruDiPPOLoss(actor, critic)
    loss.set_keys(value="v", advantage="adv")
    assert loss.tensor_keys.action == "z" and loss.tensor_keys.sample_log_prob == "action_log_prob"
    assert loss.tensor_keys.denoising_means == "m" and "m" in loss.in_keys
    batch = actor(TensorDict({"policy": torch.randn(8, OBS)}, batch_size=[8]))
    batch["adv"], batch["value_target"], batch["v"] = torch.randn(8, 1), torch.randn(8, 1), torch.randn(8, 1)
    out = loss(batch)
    assert set(loss.out_keys) == set(out.keys())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"trust_region_kl": 0.0}, "trust_region_kl"), ({"regression_coeff": -1.0}, "regression_coeff must be >= 0")],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    actor, critic, _ = build()
    with pytest.raises(ValueError, match=message):
        TruDiPPOLoss(actor, critic, **kwargs)
