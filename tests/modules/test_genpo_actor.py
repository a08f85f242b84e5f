"""GenPOActor and GenPODistribution: output contract, exact stored likelihood, deterministic mode."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.numerics import NumericalError


@pytest.fixture
def actor() -> GenPOActor:
    torch.manual_seed(0)
    return GenPOActor(GenPOFlow(action_dim=3, obs_dim=4, hidden_sizes=[16, 16])).double()


@pytest.mark.parametrize("batch_shape", [(5,), (3, 4)])
def test_outputs_have_documented_shapes_without_trailing_dimension(actor, batch_shape):
    td = actor(TensorDict({"observation": torch.randn(*batch_shape, 4, dtype=torch.float64)}, batch_size=batch_shape))
    assert td["action"].shape == (*batch_shape, 3)
    assert td["latent_action"].shape == (*batch_shape, 6)
    assert td["action_log_prob"].shape == batch_shape


def test_action_is_the_mean_of_the_two_halves(actor):
    td = actor(TensorDict({"observation": torch.randn(7, 4, dtype=torch.float64)}, batch_size=[7]))
    latent = td["latent_action"]
    torch.testing.assert_close(td["action"], (latent[:, :3] + latent[:, 3:]) / 2, rtol=0, atol=0)


def test_stored_log_prob_is_the_exact_likelihood_of_the_stored_latent(actor):
    """The log-prob written at sampling (from the noise) equals an independent inversion."""
    obs = torch.randn(9, 4, dtype=torch.float64)
    td = actor(TensorDict({"observation": obs}, batch_size=[9]))
    noise = actor.flow.inverse(td["latent_action"], obs)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(noise).sum(-1) - 2 * 5 * 3 * torch.log(
        torch.tensor(0.95, dtype=torch.float64)
    )
    torch.testing.assert_close(td["action_log_prob"], expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(actor.get_dist(td).log_prob(td["latent_action"]), expected, rtol=0, atol=1e-10)


def test_outputs_are_detached_even_with_gradients_enabled(actor):
    td = actor(TensorDict({"observation": torch.randn(4, 4, dtype=torch.float64)}, batch_size=[4]))
    assert not any(td[key].requires_grad for key in ("action", "latent_action", "action_log_prob"))


@pytest.mark.parametrize("mode", [ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN])
def test_deterministic_exploration_uses_zero_noise(actor, mode):
    obs = torch.randn(6, 4, dtype=torch.float64)
    with set_exploration_type(mode):
        first = actor(TensorDict({"observation": obs}, batch_size=[6]))
        second = actor(TensorDict({"observation": obs}, batch_size=[6]))
    zero_noise_latent = actor.flow(torch.zeros(6, 6, dtype=torch.float64), obs)
    torch.testing.assert_close(first["latent_action"], zero_noise_latent, rtol=0, atol=0)
    torch.testing.assert_close(first["action"], second["action"], rtol=0, atol=0)
    torch.testing.assert_close(actor.get_dist(first).deterministic_sample, zero_noise_latent, rtol=0, atol=0)


def test_random_exploration_samples_differ(actor):
    obs = torch.randn(6, 4, dtype=torch.float64)
    with set_exploration_type(ExplorationType.RANDOM):
        first = actor(TensorDict({"observation": obs}, batch_size=[6]))["action"]
        second = actor(TensorDict({"observation": obs}, batch_size=[6]))["action"]
    assert not torch.allclose(first, second)


def test_reparameterized_sample_carries_gradient_and_exact_log_prob(actor):
    obs = torch.randn(5, 4, dtype=torch.float64)
    dist = actor.get_dist(TensorDict({"observation": obs}, batch_size=[5]))
    latent, log_prob = dist.rsample_and_log_prob(torch.Size([2]))
    assert latent.shape == (2, 5, 6) and log_prob.shape == (2, 5)
    torch.testing.assert_close(dist.log_prob(latent.detach()), log_prob, rtol=0, atol=1e-10)
    latent.sum().backward()
    assert all(p.grad is not None for p in actor.flow.velocity_net.trunk.parameters())


def test_non_finite_observation_is_a_clear_error(actor):
    obs = torch.randn(5, 4, dtype=torch.float64)
    obs[3, 1] = float("nan")
    with pytest.raises(
        NumericalError, match=r"observation 'observation' is not finite for 1 of 5 samples; first at index 3"
    ):
        actor(TensorDict({"observation": obs}, batch_size=[5]))


def test_keys_are_configurable():
    actor = GenPOActor(
        GenPOFlow(2, 3, hidden_sizes=[8]), observation_key="policy", action_key=("agent", "action"), latent_key="z"
    )
    td = actor(TensorDict({"policy": torch.randn(4, 3)}, batch_size=[4]))
    assert td["agent", "action"].shape == (4, 2) and td["z"].shape == (4, 4)
    assert actor.in_keys == ["policy"]


def test_diverged_network_is_reported_not_sent_to_the_env(actor):
    with torch.no_grad():
        actor.flow.velocity_net.trunk[-1].bias.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="velocity net has diverged"):
        actor(TensorDict({"observation": torch.randn(3, 4, dtype=torch.float64)}, batch_size=[3]))
