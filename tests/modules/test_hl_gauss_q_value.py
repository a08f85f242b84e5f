"""HLGaussQValue: the HL-Gauss histogram against the normal CDF, Q as the histogram's mean, the init near 0."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch.distributions import Normal

from diffrl.modules.hl_gauss_q_value import HLGaussQValue


def make_critic(**kwargs) -> HLGaussQValue:
    torch.manual_seed(0)
    return HLGaussQValue(obs_dim=3, action_dim=2, hidden_sizes=[16], num_bins=21, v_min=-2.0, v_max=2.0, **kwargs)


def test_target_distribution_is_the_gaussian_mass_of_each_bin():
    critic = make_critic().double()
    target = torch.tensor([-0.37, 0.0, 1.234], dtype=torch.float64)
    width = 4.0 / 20
    lower = torch.linspace(-2.0 - width / 2, 2.0 - width / 2, 21, dtype=torch.float64)
    normal = Normal(target.unsqueeze(-1), 0.75 * width)
    mass = normal.cdf(lower + width) - normal.cdf(lower)
    expected = mass / mass.sum(-1, keepdim=True)
    torch.testing.assert_close(critic.target_distribution(target), expected, rtol=1e-10, atol=1e-12)
    # Inside the support (away from its edges) the histogram's mean is the target, up to the binning's
    # aliasing (at σ = 0.75 bin widths it is below 1e-6 of a bin width's scale; seen 8.4e-7).
    centres = torch.linspace(-2.0, 2.0, 21, dtype=torch.float64)
    torch.testing.assert_close((expected * centres).sum(-1), target, rtol=0, atol=1e-5)


def test_targets_outside_the_support_are_clamped_to_its_edge():
    critic = make_critic()
    clamped = critic.target_distribution(torch.tensor([50.0]))
    torch.testing.assert_close(clamped, critic.target_distribution(torch.tensor([2.0])))


def test_q_is_the_softmax_mean_of_the_centres_and_starts_near_zero():
    critic = make_critic()
    observation, action = torch.randn(64, 3), torch.rand(64, 2) * 2 - 1
    logits = critic.logits(critic.features(observation, action))
    centres = torch.linspace(-2.0, 2.0, 21)
    torch.testing.assert_close(critic.q_value(observation, action), (logits.softmax(-1) * centres).sum(-1))
    assert float(critic.q_value(observation, action).abs().max()) < 0.05
    td = critic(TensorDict({"observation": observation, "action": action}, [64]))
    assert td["state_action_value"].shape == (64, 1)


def test_auxiliary_head_predicts_features_and_is_optional():
    critic = make_critic()
    features = critic.features(torch.randn(5, 3), torch.randn(5, 2))
    assert critic.predict_next_features(features).shape == features.shape == (5, critic.feature_dim)
    plain = make_critic(aux_head=False)
    try:
        plain.predict_next_features(features)
    except RuntimeError as error:
        assert "aux_head" in str(error)
    else:
        raise AssertionError("a critic without the auxiliary head predicted features")
