"""SquashedGaussianActor: log π against torch's transformed distribution, the KL against Monte Carlo on the
squashed policies, the mode, the std range."""

from __future__ import annotations

import copy
import math

import torch
from torch.distributions import Independent, Normal, TanhTransform, TransformedDistribution

from diffrl.modules.squashed_gaussian_actor import SquashedGaussianActor

OBS_DIM, ACTION_DIM = 3, 2


def make_actor(seed: int = 0) -> SquashedGaussianActor:
    torch.manual_seed(seed)
    return SquashedGaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[16]).double()


def squashed(actor: SquashedGaussianActor, observation: torch.Tensor) -> TransformedDistribution:
    mean, std = actor.base_distribution(observation)
    return TransformedDistribution(Independent(Normal(mean, std), 1), [TanhTransform()])


def test_log_prob_is_the_exact_squashed_gaussian_density():
    actor = make_actor()
    observation = torch.randn(32, OBS_DIM, dtype=torch.float64)
    noise = 0.5 * torch.randn(32, ACTION_DIM, dtype=torch.float64)  # away from tanh's saturation
    sample = actor.rsample(observation, noise=noise)
    expected = squashed(actor, observation).log_prob(sample.action)
    torch.testing.assert_close(sample.log_prob, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sample.entropy_estimate, -sample.log_prob, rtol=0, atol=0)


def test_trust_region_kl_is_the_kl_of_the_squashed_policies():
    """Closed form on the base Gaussians against a Monte-Carlo KL of the squashed ones (tanh is a bijection)."""
    old, new = make_actor(0), make_actor(1)
    observation = torch.randn(4, OBS_DIM, dtype=torch.float64)
    kl = new.trust_region_kl(observation, old)
    old_policy, new_policy = squashed(old, observation), squashed(new, observation)
    base_old = old_policy.base_dist
    pre = base_old.sample((200000,))  # in the base space: no atanh round-off at saturation
    log_ratio = base_old.log_prob(pre) - squashed(new, observation).base_dist.log_prob(pre)  # Jacobians cancel
    estimate, error = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(pre.shape[0])
    assert bool(((kl - estimate).abs() < 4 * error).all()), (kl, estimate, error)
    assert float(new.trust_region_kl(observation, copy.deepcopy(new)).abs().max()) == 0.0
    del new_policy, old_policy


def test_deterministic_action_is_the_squashed_mean_and_the_std_stays_in_range():
    actor = make_actor()
    observation = 50 * torch.randn(64, OBS_DIM, dtype=torch.float64)
    mean, std = actor.base_distribution(observation)
    torch.testing.assert_close(actor.deterministic_action(observation), mean.tanh(), rtol=0, atol=0)
    assert float(std.log().min()) >= actor.min_log_std - 1e-12 and float(std.log().max()) <= actor.max_log_std + 1e-12
