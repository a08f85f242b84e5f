"""Trust-region projections: the KL split over the chain, feasibility, identity inside, optimality, exact gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from tensordict import TensorDict
from torch.distributions import Normal, kl_divergence

from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.trudi_actor import TruDiActor
from diffrl.objectives.trust_region import diagonal_gaussian_kl, project_gaussian, project_mean

B, K, D = 256, 4, 3


def reference_kl(mean, std, old_mean, old_std) -> torch.Tensor:
    """Trajectory KL per state with torch.distributions: Σ over steps and dimensions, [*B, K, d] → [*B]."""
    return kl_divergence(Normal(mean, std), Normal(old_mean, old_std)).sum((-2, -1))


def problem(seed: int = 0, dtype: torch.dtype = torch.float64):
    """Random states at logarithmically spread distances, so that some are inside the ball and some far out."""
    generator = torch.Generator().manual_seed(seed)
    old_mean = torch.randn(B, K, D, generator=generator, dtype=dtype)
    scale = torch.logspace(-2, 0.5, B, dtype=dtype)[:, None, None]
    mean = old_mean + scale * torch.randn(B, K, D, generator=generator, dtype=dtype)
    old_std = 0.2 + torch.rand(B, K, D, generator=generator, dtype=dtype)
    std = old_std * torch.exp(scale * 0.5 * torch.randn(B, K, D, generator=generator, dtype=dtype))
    return mean, std, old_mean, old_std


def test_diagonal_gaussian_kl_matches_torch_distributions():
    mean, std, old_mean, old_std = problem()
    torch.testing.assert_close(
        diagonal_gaussian_kl(mean, std, old_mean, old_std).sum(-1), reference_kl(mean, std, old_mean, old_std)
    )


@pytest.mark.parametrize("learn_std", [False, True])
def test_sum_of_step_kls_is_the_trajectory_kl(learn_std):
    """E_old[Σ_k KL(p_old,k ‖ p_new,k)(x_k)] = E_old[log p_old(chain) − log p_new(chain)] (the chain rule of KL).

    Both sides are averaged over the same 4000 chains drawn from the old policy at one state; their paired
    difference has mean zero, so the sample means agree within 3 standard errors of that difference.
    """
    torch.manual_seed(0)
    old = TruDiActor(
        DenoisingChain(2, 3, num_steps=K, hidden_sizes=[16], learn_std=learn_std, denoised_clip=None)
    ).double()
    new = TruDiActor(
        DenoisingChain(2, 3, num_steps=K, hidden_sizes=[16], learn_std=learn_std, denoised_clip=None)
    ).double()
    new.load_state_dict(old.state_dict())
    with torch.no_grad():
        for parameter in new.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    obs = torch.randn(1, 3, dtype=torch.float64).expand(4000, 3)
    batch = old(TensorDict({"observation": obs}, batch_size=[4000]))
    chain = batch["denoising_chain"]
    new_dist = new.get_dist(batch)
    log_ratio = batch["action_log_prob"] - new_dist.log_prob(chain)
    new_means = new_dist.step_means(chain).mean
    step_kl = kl_divergence(
        Normal(batch["denoising_means"], batch["denoising_stds"]), Normal(new_means, new_dist.stds)
    ).sum((-2, -1))
    difference = (log_ratio - step_kl).detach()
    standard_error = difference.std().item() / math.sqrt(len(difference))
    assert abs(difference.mean().item()) < 3 * standard_error
    assert step_kl.mean().item() > 10 * standard_error  # the test has power: the KL is clearly non-zero


@pytest.mark.parametrize("epsilon", [0.01, 0.3])
def test_mean_projection_meets_the_budget_and_is_the_identity_inside(epsilon):
    mean, _, old_mean, old_std = problem()
    projected = project_mean(mean, old_mean, old_std, epsilon)
    before = reference_kl(mean, old_std, old_mean, old_std)
    after = reference_kl(projected, old_std, old_mean, old_std)
    outside = before > epsilon
    assert outside.any() and (~outside).any()
    assert (after <= epsilon * (1 + 1e-6)).all()
    torch.testing.assert_close(after[outside], torch.full_like(after[outside], epsilon), rtol=1e-6, atol=0)
    assert torch.equal(projected[~outside], mean[~outside])
    # One joint rescaling of every step: the step from the old means keeps its direction.
    expected = old_mean + (mean - old_mean) * (epsilon / before).sqrt()[:, None, None]
    torch.testing.assert_close(projected[outside], expected[outside], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("epsilon", [0.01, 0.3])
def test_gaussian_projection_meets_the_budget_and_is_the_identity_inside(epsilon):
    mean, std, old_mean, old_std = problem()
    projected_mean, projected_std = project_gaussian(mean, std, old_mean, old_std, epsilon)
    before = reference_kl(mean, std, old_mean, old_std)
    after = reference_kl(projected_mean, projected_std, old_mean, old_std)
    outside = before > epsilon
    assert outside.any() and (~outside).any()
    assert (after <= epsilon * (1 + 1e-6)).all()
    torch.testing.assert_close(after[outside], torch.full_like(after[outside], epsilon), rtol=1e-6, atol=0)
    assert torch.equal(projected_mean[~outside], mean[~outside])
    assert torch.equal(projected_std[~outside], std[~outside])


def test_gaussian_projection_in_float32_stays_inside_the_budget():
    mean, std, old_mean, old_std = problem(dtype=torch.float32)
    projected_mean, projected_std = project_gaussian(mean, std, old_mean, old_std, 0.05)
    after = reference_kl(projected_mean.double(), projected_std.double(), old_mean.double(), old_std.double())
    assert (after <= 0.05 * (1 + 1e-4)).all()  # float32 round-off of the inputs, relative ~1e-6 per term


def test_gaussian_projection_with_equal_stds_is_the_mean_projection():
    mean, _, old_mean, old_std = problem()
    projected_mean, projected_std = project_gaussian(mean, old_std, old_mean, old_std, 0.1)
    torch.testing.assert_close(projected_mean, project_mean(mean, old_mean, old_std, 0.1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(projected_std, old_std, rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_gaussian_projection_is_the_closest_feasible_point(seed):
    """A general-purpose constrained optimizer (SLSQP) on min Σ KL(q‖p) s.t. Σ KL(q‖p_old) ≤ ε finds the same point."""
    generator = torch.Generator().manual_seed(seed)
    epsilon = 0.2
    mean, old_mean = torch.randn(2, 1, 2, 2, generator=generator, dtype=torch.float64)
    std, old_std = 0.3 + torch.rand(2, 1, 2, 2, generator=generator, dtype=torch.float64)
    projected_mean, projected_std = project_gaussian(mean, std, old_mean, old_std, epsilon)

    def unpack(z: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.as_tensor(z, dtype=torch.float64)
        return z[:4].reshape(1, 2, 2), z[4:].exp().reshape(1, 2, 2)

    def objective(z: np.ndarray) -> float:
        return float(reference_kl(*unpack(z), mean, std))

    def constraint(z: np.ndarray) -> float:
        return epsilon - float(reference_kl(*unpack(z), old_mean, old_std))

    start = np.concatenate([old_mean.flatten().numpy(), old_std.log().flatten().numpy()])
    result = minimize(objective, start, method="SLSQP", constraints=[{"type": "ineq", "fun": constraint}], tol=1e-12)
    assert result.success, result.message
    assert float(reference_kl(mean, std, old_mean, old_std)) > epsilon  # the constraint binds
    found_mean, found_std = unpack(result.x)
    ours = float(reference_kl(projected_mean, projected_std, mean, std))
    assert ours <= result.fun + 1e-7
    torch.testing.assert_close(projected_mean, found_mean, rtol=0, atol=1e-4)
    torch.testing.assert_close(projected_std, found_std, rtol=0, atol=1e-4)


def gradcheck_problem():
    """Few states, in and out of the ball (away from its boundary, where the projection has a kink)."""
    mean, std, old_mean, old_std = (x[::64].clone() for x in problem(seed=5))
    kl = reference_kl(mean, std, old_mean, old_std)
    epsilon = 1.0
    assert ((kl - epsilon).abs() > 1e-3).all() and (kl > epsilon).any() and (kl < epsilon).any()
    return mean, std, old_mean, old_std, epsilon


def test_mean_projection_gradients_match_finite_differences():
    mean, _, old_mean, old_std, epsilon = gradcheck_problem()
    inputs = (mean.requires_grad_(), old_mean.requires_grad_(), old_std.requires_grad_())
    assert torch.autograd.gradcheck(lambda m, o, s: project_mean(m, o, s, epsilon), inputs)


def test_gaussian_projection_gradients_match_finite_differences():
    mean, std, old_mean, old_std, epsilon = gradcheck_problem()
    inputs = tuple(x.requires_grad_() for x in (mean, std, old_mean, old_std))
    assert torch.autograd.gradcheck(lambda *xs: project_gaussian(*xs, epsilon), inputs)


def test_gaussian_projection_gradients_reach_broadcast_stds():
    """A std shared by all states ([K, d], as a learned std is) gets the sum of the per-state gradients."""
    mean, std, old_mean, old_std, epsilon = gradcheck_problem()
    shared = std[0].clone().requires_grad_()
    mean.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, s: project_gaussian(m, s, old_mean, old_std, epsilon), (mean, shared))


def test_non_positive_epsilon_is_rejected():
    mean, std, old_mean, old_std = problem()
    with pytest.raises(ValueError, match="epsilon"):
        project_mean(mean, old_mean, std, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        project_gaussian(mean, std, old_mean, old_std, -1.0)
