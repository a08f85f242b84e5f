"""DPPOLoss: per-step log-densities against torch's Normal in float64, the clip schedule and the surrogate by hand."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.distributions import Normal
from torchrl.modules import ValueOperator

from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.trudi_actor import TruDiActor
from diffrl.objectives.dppo import DPPOLoss, clip_schedule, step_log_probs

D, OBS, K, BATCH = 2, 3, 4, 64


def build(seed: int = 0, **loss_kwargs) -> tuple[TruDiActor, DPPOLoss]:
    torch.manual_seed(seed)
    chain = DenoisingChain(D, OBS, num_steps=K, hidden_sizes=[32], min_std=0.3, parameterization="mean")
    actor = TruDiActor(chain).double()
    critic = ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"]).double()
    return actor, DPPOLoss(actor, critic, **loss_kwargs).double()


def rollout_batch(actor: TruDiActor, seed: int = 1) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    batch = actor(TensorDict({"observation": torch.randn(BATCH, OBS, generator=generator).double()}, [BATCH]))
    batch["advantage"] = torch.randn(BATCH, 1, generator=generator).double()
    batch["value_target"] = torch.randn(BATCH, 1, generator=generator).double()
    batch["state_value"] = torch.zeros(BATCH, 1).double()
    return batch


def test_step_log_probs_are_torchs_normal_densities_and_sum_to_the_chains_exact_log_likelihood():
    actor, _ = build()
    batch = rollout_batch(actor)
    chain, means, stds = batch["denoising_chain"], batch["denoising_means"], batch["denoising_stds"]
    entries = step_log_probs(chain, means, stds)
    independent = Normal(means, stds).log_prob(chain[:, 1:, :])
    torch.testing.assert_close(entries, independent, rtol=0, atol=1e-12)
    exact = actor.chain.log_prob(chain, batch["observation"])  # the actor's own likelihood, one network pass
    torch.testing.assert_close(entries.sum((-2, -1)), exact, rtol=0, atol=1e-10)


def test_the_clip_schedule_rises_exponentially_from_the_noisiest_step_to_the_last():
    final, noisiest, rate = 0.2, 0.05, 3.0
    expected = [noisiest + (final - noisiest) * (math.exp(rate * i / 3) - 1) / (math.exp(rate) - 1) for i in range(4)]
    assert clip_schedule(4, final, noisiest, rate).tolist() == pytest.approx(expected, abs=1e-15)
    assert clip_schedule(4, final, noisiest, rate)[[0, -1]].tolist() == pytest.approx([noisiest, final])
    assert clip_schedule(1, final, noisiest, rate).tolist() == [final]  # the reference's 0/0 is avoided


def test_at_the_rollout_policy_every_step_ratio_is_one_and_the_loss_is_the_discounted_advantage():
    actor, loss = build(denoising_discount=0.9)
    batch = rollout_batch(actor)
    out = loss(batch)
    discount = sum(0.9**exponent for exponent in range(K)) / K  # rows K-1..0 get 0.9^0..0.9^(K-1)
    assert float(out["loss_objective"]) == pytest.approx(-discount * float(batch["advantage"].mean()), abs=1e-12)
    assert abs(float(out["kl_approx"])) < 1e-12 and abs(float(out["step_kl_approx"])) < 1e-12
    assert float(out["clip_fraction"]) == 0.0 and float(out["ESS"]) == pytest.approx(1.0)


def test_the_surrogate_matches_a_hand_computation_with_per_step_clips_discounts_and_clamps():
    actor, loss = build(clip_epsilon=0.02, clip_epsilon_noisiest=0.005, clip_rate=2.0, denoising_discount=0.8)
    batch = rollout_batch(actor)
    with torch.no_grad():
        for parameter in actor.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    out = loss(batch)

    chain, observation = batch["denoising_chain"], batch["observation"]
    new_mean = actor.chain.step_means(chain, observation).mean
    new = Normal(new_mean, actor.chain.stds(chain)).log_prob(chain[:, 1:, :]).clamp(-5, 2).mean(-1)
    old = Normal(batch["denoising_means"], batch["denoising_stds"]).log_prob(chain[:, 1:, :]).clamp(-5, 2).mean(-1)
    ratio = (new - old).exp()  # [B, K]
    clip = torch.tensor(
        [0.005 + 0.015 * (math.exp(2.0 * i / 3) - 1) / (math.exp(2.0) - 1) for i in range(K)], dtype=torch.float64
    )
    advantage = batch["advantage"] * torch.tensor([0.8**3, 0.8**2, 0.8, 1.0], dtype=torch.float64)
    clipped = torch.minimum(torch.maximum(ratio, 1 - clip), 1 + clip)
    expected = -torch.minimum(ratio * advantage, clipped * advantage).mean()
    assert float(out["loss_objective"]) == pytest.approx(float(expected), rel=1e-6)
    fraction = (clipped != ratio).double()
    assert 0 < float(out["clip_fraction"]) < 1, "the perturbation is large enough to clip some steps"
    assert float(out["clip_fraction"]) == pytest.approx(float(fraction.mean()), abs=1e-12)
    for row in range(K):  # row i is the step k = K - i
        assert float(out[f"clip_fraction_{K - row}"]) == pytest.approx(float(fraction[:, row].mean()), abs=1e-12)


def test_clamped_log_densities_are_counted_and_stop_the_gradient():
    actor, loss = build()
    batch = rollout_batch(actor)
    chain = batch["denoising_chain"].clone()
    chain[:4, 1:, :] += 10.0  # far in the tails of every step: below the reference's floor of -5
    batch["denoising_chain"] = chain
    batch["action_log_prob"] = actor.chain.log_prob(chain, batch["observation"]).detach()
    out = loss(batch)
    assert float(out["log_prob_clamp_fraction"]) == pytest.approx(4 / BATCH, abs=1e-12)
    actor.zero_grad()
    loss(batch[:4])["loss_objective"].backward()
    assert all(parameter.grad is None or not parameter.grad.any() for parameter in actor.parameters())


def test_bad_arguments_are_clear_errors():
    actor, _ = build()
    with pytest.raises(ValueError, match="the clips must be > 0"):
        DPPOLoss(actor, clip_epsilon=0.0)
    with pytest.raises(ValueError, match="denoising_discount must be in"):
        DPPOLoss(actor, denoising_discount=1.5)
    with pytest.raises(ValueError, match="low < high"):
        DPPOLoss(actor, log_prob_bounds=(2.0, -5.0))
