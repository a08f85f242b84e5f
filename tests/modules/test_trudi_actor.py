"""TruDiActor, DenoisingChain and TruDiDistribution: output contract, exact chain likelihood, deterministic mode."""

from __future__ import annotations

import math

import pytest
import torch
from reference_math import cosine_alphas_cumprod
from tensordict import TensorDict
from torch.distributions import Normal
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.trudi_actor import TruDiActor
from diffrl.numerics import NumericalError

D, OBS, K, MIN_STD = 3, 4, 4, 0.1


def ddpm_step(k: int, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Ho et al. eq. 11 mean and the posterior std floored at MIN_STD, for the step x_k → x_{k−1}."""
    alpha_bar = cosine_alphas_cumprod(K)
    beta = 1 - alpha_bar[k] / alpha_bar[k - 1]
    mean = (x - beta / math.sqrt(1 - alpha_bar[k]) * eps) / math.sqrt(1 - beta)
    std = max(math.sqrt((1 - alpha_bar[k - 1]) / (1 - alpha_bar[k]) * beta), MIN_STD)
    return mean, std


def net_output(actor: TruDiActor, x: torch.Tensor, obs: torch.Tensor, k: int) -> torch.Tensor:
    return actor.chain.net(x, obs, torch.tensor(k / K, dtype=x.dtype))


def make_actor(seed: int = 0, **kwargs) -> TruDiActor:
    torch.manual_seed(seed)
    squash = kwargs.pop("squash", False)
    kwargs = {"num_steps": K, "hidden_sizes": [16, 16], "min_std": MIN_STD, "denoised_clip": None, **kwargs}
    return TruDiActor(DenoisingChain(D, OBS, **kwargs), squash=squash).double()


def observations(n: int = 9, seed: int = 1) -> TensorDict:
    obs = torch.randn(n, OBS, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return TensorDict({"observation": obs}, batch_size=[n])


def reference_log_prob(
    actor: TruDiActor, chain: torch.Tensor, obs: torch.Tensor, parameterization: str
) -> torch.Tensor:
    """Σ_k log N(x_{k−1}; μ_k, σ_k²) with torch.distributions.Normal and the formulas above."""
    total = torch.zeros(chain.shape[0], dtype=torch.float64)
    for row in range(K):
        k = K - row
        output = net_output(actor, chain[:, row], obs, k)
        mean, std = ddpm_step(k, chain[:, row], output)
        if parameterization == "mean":
            mean = output
        total += Normal(mean, std).log_prob(chain[:, row + 1]).sum(-1)
    return total


@pytest.mark.parametrize("batch_shape", [(5,), (3, 4)])
def test_outputs_have_documented_shapes_without_trailing_dimension(batch_shape):
    actor = make_actor()
    obs = torch.randn(*batch_shape, OBS, dtype=torch.float64)
    td = actor(TensorDict({"observation": obs}, batch_size=batch_shape))
    assert td["action"].shape == (*batch_shape, D)
    assert td["denoising_chain"].shape == (*batch_shape, K + 1, D)
    assert td["denoising_means"].shape == td["denoising_stds"].shape == (*batch_shape, K, D)
    assert td["action_log_prob"].shape == batch_shape
    torch.testing.assert_close(td["action"], td["denoising_chain"][..., -1, :], rtol=0, atol=0)
    assert actor.log_prob_keys == ["action_log_prob"] and actor.dist_sample_keys == ["denoising_chain"]


@pytest.mark.parametrize("parameterization", ["epsilon", "mean"])
def test_stored_log_prob_is_the_sum_of_gaussian_step_log_densities(parameterization):
    actor = make_actor(parameterization=parameterization)
    td = actor(observations())
    chain, obs = td["denoising_chain"], td["observation"]
    expected = reference_log_prob(actor, chain, obs, parameterization)
    torch.testing.assert_close(td["action_log_prob"], expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(actor.get_dist(td).log_prob(chain), expected, rtol=0, atol=1e-10)


def test_stored_means_and_stds_are_the_steps_the_chain_was_drawn_from():
    actor = make_actor()
    td = actor(observations())
    chain, obs = td["denoising_chain"], td["observation"]
    for row in range(K):
        k = K - row
        mean, std = ddpm_step(k, chain[:, row], net_output(actor, chain[:, row], obs, k))
        torch.testing.assert_close(td["denoising_means"][:, row], mean, rtol=0, atol=1e-10)
        torch.testing.assert_close(td["denoising_stds"][:, row], torch.full_like(mean, std), rtol=0, atol=1e-12)


def test_denoised_clip_bounds_the_predicted_clean_action():
    actor = make_actor(denoised_clip=0.5)
    td = actor(observations(64))
    chain, obs = td["denoising_chain"], td["observation"]
    alpha_bar = cosine_alphas_cumprod(K)
    row, k = 0, K
    eps = net_output(actor, chain[:, row], obs, k)
    denoised = ((chain[:, row] - math.sqrt(1 - alpha_bar[k]) * eps) / math.sqrt(alpha_bar[k])).clamp(-0.5, 0.5)
    beta = 1 - alpha_bar[k] / alpha_bar[k - 1]
    expected = (
        math.sqrt(alpha_bar[k - 1]) * beta / (1 - alpha_bar[k]) * denoised
        + math.sqrt(1 - beta) * (1 - alpha_bar[k - 1]) / (1 - alpha_bar[k]) * chain[:, row]
    )
    torch.testing.assert_close(td["denoising_means"][:, row], expected, rtol=0, atol=1e-10)
    means = actor.get_dist(td).step_means(chain)
    assert means.clipped[:, row].any()  # at k = K, 1/√ᾱ_K ≈ 100: almost every x̂_0 is clipped


def test_outputs_are_detached_even_with_gradients_enabled():
    actor = make_actor()
    td = actor(observations(4))
    assert not any(td[key].requires_grad for key in td.keys() if key != "observation")


@pytest.mark.parametrize("mode", [ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN])
def test_deterministic_exploration_runs_the_noise_off_chain(mode):
    actor = make_actor()
    td_in = observations(6)
    with set_exploration_type(mode):
        first = actor(td_in.clone())
        second = actor(td_in.clone())
    chain, obs = first["denoising_chain"], first["observation"]
    torch.testing.assert_close(first["denoising_chain"], second["denoising_chain"], rtol=0, atol=0)
    assert torch.equal(chain[:, 0], torch.zeros(6, D, dtype=torch.float64))
    for row in range(K):
        mean, _ = ddpm_step(K - row, chain[:, row], net_output(actor, chain[:, row], obs, K - row))
        torch.testing.assert_close(chain[:, row + 1], mean, rtol=0, atol=1e-10)
    stds = [ddpm_step(k, chain[:, 0], chain[:, 0])[1] for k in range(1, K + 1)]
    peak = -D * sum(math.log(s) for s in stds) - K * D * 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(first["action_log_prob"], torch.full((6,), peak, dtype=torch.float64))
    torch.testing.assert_close(actor.get_dist(first).deterministic_sample, chain, rtol=0, atol=1e-12)


def test_deterministic_ddim_eta_zero_is_ddims_sampler():
    """x_{k−1} = √ᾱ_{k−1} x̂_0 + √(1−ᾱ_{k−1}) ε̂ from x_K = 0 (arXiv 2010.02502 eq. 12 with σ = 0)."""
    actor = make_actor(schedule="ddim", ddim_eta=0.0)
    alpha_bar = cosine_alphas_cumprod(K)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        td = actor(observations(5))
    chain, obs = td["denoising_chain"], td["observation"]
    for row in range(K):
        k = K - row
        eps = net_output(actor, chain[:, row], obs, k)
        x0 = (chain[:, row] - math.sqrt(1 - alpha_bar[k]) * eps) / math.sqrt(alpha_bar[k])
        expected = math.sqrt(alpha_bar[k - 1]) * x0 + math.sqrt(1 - alpha_bar[k - 1]) * eps
        torch.testing.assert_close(chain[:, row + 1], expected, rtol=1e-9, atol=1e-9)


def test_random_exploration_samples_differ():
    actor = make_actor()
    with set_exploration_type(ExplorationType.RANDOM):
        first = actor(observations(6))["action"]
        second = actor(observations(6))["action"]
    assert not torch.allclose(first, second)


def test_learned_std_starts_at_the_floored_schedule_and_receives_gradients():
    actor = make_actor(learn_std=True)
    dist = actor.get_dist(observations(8))
    expected = torch.tensor(
        [max(ddpm_step(k, torch.zeros(1), torch.zeros(1))[1], 2 * MIN_STD) for k in range(K, 0, -1)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(dist.stds, expected.unsqueeze(-1).expand(K, D), rtol=1e-6, atol=0)
    td = actor(observations(8))
    dist.log_prob(td["denoising_chain"]).sum().backward()
    assert actor.chain.log_std_offset.grad is not None and actor.chain.log_std_offset.grad.abs().sum() > 0
    with torch.no_grad():
        actor.chain.log_std_offset.fill_(-30.0)  # however low the parameter goes, the floor holds
    assert (actor.get_dist(td).stds >= MIN_STD).all()


def test_entropy_is_the_exact_chain_entropy():
    actor = make_actor(learn_std=True)
    with torch.no_grad():
        actor.chain.log_std_offset.add_(torch.randn(K, D, dtype=torch.float64))
    dist = actor.get_dist(observations(3))
    step_entropies = sum(Normal(0.0, s).entropy() for s in dist.stds.flatten())
    prior_entropy = D * Normal(0.0, torch.tensor(1.0, dtype=torch.float64)).entropy()
    torch.testing.assert_close(dist.entropy(), (step_entropies + prior_entropy).expand(3), rtol=0, atol=1e-10)


def test_reparameterized_sample_carries_gradient_and_exact_log_prob():
    actor = make_actor()
    dist = actor.get_dist(observations(5))
    chain, log_prob = dist.rsample_and_log_prob(torch.Size([2]))
    assert chain.shape == (2, 5, K + 1, D) and log_prob.shape == (2, 5)
    torch.testing.assert_close(dist.log_prob(chain.detach()), log_prob, rtol=0, atol=1e-10)
    chain[..., -1, :].sum().backward()
    assert all(p.grad is not None for p in actor.chain.net.trunk.parameters())


def test_non_finite_observation_is_a_clear_error():
    actor = make_actor()
    td = observations(5)
    td["observation"][3, 1] = float("nan")
    with pytest.raises(
        NumericalError, match=r"observation 'observation' is not finite for 1 of 5 samples; first at index 3"
    ):
        actor(td)


@pytest.mark.parametrize("rows", [K, K + 2])
def test_given_noise_with_the_wrong_number_of_rows_is_a_clear_error(rows):
    # K + 2 rows would otherwise run the chain on the first K + 1 and add the extra row's density to log π.
    chain = make_actor().chain
    obs = torch.randn(5, OBS, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=rf"noise must be \[\*B, K\+1, d\] = \[\*B, {K + 1}, {D}\].*got \[5, {rows}, {D}\]"
    ):
        chain.sample(obs, noise=torch.randn(5, rows, D, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"parameterization": "v"}, "parameterization"), ({"ddim_eta": 0.5}, "ddim_eta"), ({"action_dim": 0}, "positive")],
)
def test_invalid_arguments_are_clear_errors(kwargs, message):
    arguments = {"action_dim": D, "obs_dim": OBS, **kwargs}
    with pytest.raises(ValueError, match=message):
        DenoisingChain(**arguments)


def test_squashed_action_is_tanh_of_the_chain_end_and_keeps_the_chain_likelihood():
    torch.manual_seed(0)
    plain = TruDiActor(DenoisingChain(2, 3, num_steps=3, hidden_sizes=[16]), squash=False).double()
    squashed = TruDiActor(DenoisingChain(2, 3, num_steps=3, hidden_sizes=[16]), squash=True).double()
    squashed.load_state_dict(plain.state_dict())
    obs = torch.randn(6, 3, dtype=torch.float64)
    torch.manual_seed(1)
    expected = plain(TensorDict({"observation": obs}, batch_size=[6]))
    torch.manual_seed(1)
    out = squashed(TensorDict({"observation": obs}, batch_size=[6]))
    torch.testing.assert_close(out["action"], expected["denoising_chain"][:, -1].tanh(), rtol=0, atol=0)
    torch.testing.assert_close(out["action_log_prob"], expected["action_log_prob"], rtol=0, atol=0)
    assert out["action"].abs().max() < 1
