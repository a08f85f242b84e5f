"""GenPOFlow: closed-form likelihood, exact inversion, normalization, input checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jacrev, vmap

from diffrl.modules.genpo_flow import GenPOFlow


def make_flow(d: int, obs_dim: int, num_steps: int, mix: float, seed: int) -> GenPOFlow:
    """A float64 flow whose last layer is not near zero, so the map is far from the identity."""
    torch.manual_seed(seed)
    flow = GenPOFlow(d, obs_dim, num_steps=num_steps, mix=mix, hidden_sizes=[16, 16]).double()
    with torch.no_grad():
        flow.velocity_net.trunk[-1].weight.mul_(3.0)
    return flow


CASES = [(1, 2, 1, 0.95, 0), (2, 3, 5, 0.95, 1), (3, 4, 3, 0.7, 2), (4, 1, 8, 1.0, 3), (2, 5, 2, 0.5, 4)]


@pytest.mark.parametrize(("d", "obs_dim", "num_steps", "mix", "seed"), CASES)
def test_log_prob_matches_bruteforce_jacobian(d, obs_dim, num_steps, mix, seed):
    """log π(ã) = log N(F⁻¹(ã)) + log|det ∂F⁻¹/∂ã|, the Jacobian by autograd in float64."""
    flow = make_flow(d, obs_dim, num_steps, mix, seed)
    obs = torch.randn(7, obs_dim, dtype=torch.float64)
    latent = 1.5 * torch.randn(7, 2 * d, dtype=torch.float64)

    def inverse_single(a, s):
        return flow.inverse(a, s)

    jacobians = vmap(jacrev(inverse_single))(latent, obs)  # [7, 2d, 2d]
    noise = flow.inverse(latent, obs)
    gaussian = torch.distributions.Normal(0.0, 1.0).log_prob(noise).sum(-1)
    expected = gaussian + torch.linalg.slogdet(jacobians).logabsdet
    assert torch.max(torch.abs(flow.log_prob(latent, obs) - expected)) < 1e-8
    # The log-determinant is the constant the class claims, independently of θ and input.
    assert torch.allclose(
        torch.linalg.slogdet(jacobians).logabsdet,
        torch.full((7,), -2.0 * num_steps * d * math.log(mix), dtype=torch.float64),
        atol=1e-10,
    )


@pytest.mark.parametrize(("d", "obs_dim", "num_steps", "mix", "seed"), CASES)
def test_inverse_round_trips_in_float64(d, obs_dim, num_steps, mix, seed):
    flow = make_flow(d, obs_dim, num_steps, mix, seed)
    obs = torch.randn(3, 4, obs_dim, dtype=torch.float64)  # a leading batch shape of rank 2
    noise = torch.randn(3, 4, 2 * d, dtype=torch.float64)
    latent = 2.0 * torch.randn(3, 4, 2 * d, dtype=torch.float64)
    assert torch.max(torch.abs(flow.inverse(flow(noise, obs), obs) - noise)) < 1e-10
    assert torch.max(torch.abs(flow(flow.inverse(latent, obs), obs) - latent)) < 1e-10


def test_log_prob_of_noise_equals_log_prob_by_inversion():
    flow = make_flow(2, 3, 5, 0.95, 5)
    obs = torch.randn(11, 3, dtype=torch.float64)
    noise = torch.randn(11, 4, dtype=torch.float64)
    latent = flow(noise, obs)
    assert torch.max(torch.abs(flow.log_prob_of_noise(noise, obs) - flow.log_prob(latent, obs))) < 1e-10


def test_density_integrates_to_one_for_one_dimensional_actions():
    """d = 1: the density of ã ∈ R² integrates to 1 on a grid (midpoint rule).

    The mass outside the box [-L, L]² is below 1e-6 for this flow (the latent stays within a
    few units of the base noise); the midpoint rule's error on a smooth density with step
    h = 0.02 is O(h²) ≈ 1e-4, so 2e-3 is a safe, failing-if-wrong tolerance (a missing
    log-determinant term would be off by a factor p^{-2N} ≈ 1.67).
    """
    flow = make_flow(1, 2, 5, 0.95, 6)
    obs = torch.tensor([0.3, -0.7], dtype=torch.float64)
    half_width, step = 9.0, 0.02
    centers = torch.arange(-half_width + step / 2, half_width, step, dtype=torch.float64)
    grid = torch.cartesian_prod(centers, centers)
    with torch.no_grad():
        density = flow.log_prob(grid, obs.expand(len(grid), 2)).exp()
    mass = density.sum() * step**2
    assert abs(mass.item() - 1.0) < 2e-3
    # The integrand really reaches the edge of the box only negligibly.
    edge = (grid.abs().max(-1).values > half_width - 1.0).nonzero().squeeze(-1)
    assert density[edge].sum() * step**2 < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_works_in_float32_and_float64(dtype):
    flow = GenPOFlow(3, 5, hidden_sizes=[32, 32]).to(dtype)
    obs = torch.randn(6, 5, dtype=dtype)
    latent = flow(torch.randn(6, 6, dtype=dtype), obs)
    log_prob = flow.log_prob(latent, obs)
    assert latent.dtype == dtype and log_prob.dtype == dtype and log_prob.shape == (6,)


@pytest.mark.parametrize("mix", [0.0, -0.1, 1.5, float("nan")])
def test_mix_outside_unit_interval_is_a_clear_error(mix):
    with pytest.raises(ValueError, match="mixing coefficient"):
        GenPOFlow(2, 3, mix=mix)


def test_wrong_shapes_are_clear_errors():
    flow = GenPOFlow(2, 3, hidden_sizes=[8])
    with pytest.raises(ValueError, match="2·d = 4"):
        flow(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="observation must have last dimension 3"):
        flow.inverse(torch.randn(5, 4), torch.randn(5, 2))
    with pytest.raises(ValueError, match="batch shape"):
        flow.log_prob(torch.randn(5, 4), torch.randn(6, 3))


@pytest.mark.parametrize(("rows", "fresh_rows"), [(7, 7), (7, 3), (2, 9)])
def test_stacked_inverse_and_forward_equal_the_separate_passes_in_float64(rows, fresh_rows):
    torch.manual_seed(3)
    flow = GenPOFlow(2, 3, num_steps=4, mix=0.9, hidden_sizes=[16, 16]).double()
    latent, latent_obs = torch.randn(rows, 4, dtype=torch.float64), torch.randn(rows, 3, dtype=torch.float64)
    noise, noise_obs = torch.randn(fresh_rows, 4, dtype=torch.float64), torch.randn(fresh_rows, 3, dtype=torch.float64)
    base, fresh = flow.inverse_and_forward(latent, latent_obs, noise, noise_obs)
    torch.testing.assert_close(base, flow.inverse(latent, latent_obs), rtol=0, atol=1e-12)
    torch.testing.assert_close(fresh, flow(noise, noise_obs), rtol=0, atol=1e-12)
    # Gradients flow through both halves, as through the separate passes.
    (base.sum() + fresh.sum()).backward()
    assert all(parameter.grad is not None for parameter in flow.velocity_net.trunk.parameters())


def stacked_pass_and_gradients(flow: GenPOFlow, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    flow.zero_grad(set_to_none=True)
    base, fresh = flow.inverse_and_forward(*inputs)
    (base.pow(2).sum() + fresh.sum()).backward()
    return [base.detach(), fresh.detach(), *(parameter.grad for parameter in flow.velocity_net.parameters())]


@pytest.mark.slow
def test_the_compiled_stacked_pass_computes_the_eager_one_and_a_copy_uses_its_own_weights():
    import copy

    torch.manual_seed(5)
    flow = GenPOFlow(2, 3, num_steps=3, mix=0.9, hidden_sizes=[16, 16]).double()
    inputs = tuple(torch.randn(rows, size, dtype=torch.float64) for rows, size in ((6, 4), (6, 3), (4, 4), (4, 3)))
    eager = stacked_pass_and_gradients(flow, inputs)
    flow.compile_stacked_pass()
    compiled = stacked_pass_and_gradients(flow, inputs)
    for got, expected in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)

    # Dynamo guards on the flow: a deep copy with other weights gets its own graph, not the original's.
    twin = copy.deepcopy(flow)
    with torch.no_grad():
        twin.velocity_net.trunk[-1].weight.mul_(-2.0)
    reference = copy.deepcopy(twin)
    reference.stacked_pass_compiled = False
    twin_compiled, twin_eager = stacked_pass_and_gradients(twin, inputs), stacked_pass_and_gradients(reference, inputs)
    for got, expected in zip(twin_compiled, twin_eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)
    assert not torch.allclose(twin_compiled[1], compiled[1])


@pytest.mark.slow
@pytest.mark.parametrize(("mix", "num_steps"), [(0.9, 3), (0.95, 3), (0.7, 4)])
def test_compiled_stacked_passes_of_flows_with_other_constants_each_compute_their_own(mix, num_steps):
    """One process compiles the pass for several flows (the suite, a user's sweep): each keeps its constants."""
    torch.manual_seed(6)
    flow = GenPOFlow(2, 3, num_steps=num_steps, mix=mix, hidden_sizes=[16]).double()
    inputs = tuple(torch.randn(rows, size, dtype=torch.float64) for rows, size in ((6, 4), (6, 3), (4, 4), (4, 3)))
    eager = stacked_pass_and_gradients(flow, inputs)
    flow.compile_stacked_pass()
    for got, expected in zip(stacked_pass_and_gradients(flow, inputs), eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)
