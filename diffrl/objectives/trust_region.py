r"""Trust-region projections of a Gaussian denoising chain onto a whole-trajectory KL ball.

Symbols: B the batch shape (one entry per state), K the number of chain steps, d the action
dimension. A policy at one state is K diagonal Gaussians N(μ_k, diag σ_k²), given as means
[*B, K, d] and stds broadcastable to that shape. The *trajectory KL* of one state sums over
steps and dimensions (the last two axes):

.. math:: m = \sum_{k} \mathrm{KL}\big(N(μ_k, σ_k^2) \,\|\, N(μ^{old}_k, (σ^{old}_k)^2)\big).

Why the sum: the chain's steps are the states of a K-step decision process, and m sums the
per-state KL over them, the quantity TRPO and Otto et al. bound at each environment state. Two
Markov chains that share the prior x_K ~ N(0, I) have, by the chain rule of KL,
KL(p_old(x_{0:K}) ‖ p(x_{0:K})) = Σ_k E_{x_k∼p_old}[KL(p_old(·|x_k) ‖ p(·|x_k))]. At the x_k of a chain
drawn from the old policy, m is a one-sample value of that whole-chain KL when the stds are fixed and
equal (each step's KL is then symmetric). With learned stds the per-step KLs point the other way,
so m estimates neither whole-chain KL exactly; it agrees with both to second order in the change of
the policy.

The projection returns, per state, the point π̃ closest to the network's π in the same KL
metric among those with trajectory KL to the old policy at most ε,

.. math:: \min_{\tilde π} \sum_k \mathrm{KL}(\tilde π_k \| π_k) \quad\text{s.t.}\quad
          \sum_k \mathrm{KL}(\tilde π_k \| π^{old}_k) \le ε,

and π itself when it is already inside (the projection is the identity there). These are
the KL projections of Otto et al. (arXiv 2101.09207), re-derived here for a whole chain with
one shared budget (one Lagrange multiplier per state for all steps); Otto et al. bound the
mean and the covariance parts separately, one Gaussian at a time.

**Derivation.** The Lagrangian Σ_k KL(π̃_k‖π_k) + η(Σ_k KL(π̃_k‖π^{old}_k) − ε) is minimized over
distributions by the normalized geometric mixture π̃_k ∝ (π_k π^{old η}_k)^{1/(1+η)}. With
t = 1/(1+η) ∈ (0, 1] this is Gaussian with interpolated natural parameters (precision λ = σ⁻²)

.. math:: λ̃ = t λ + (1-t) λ^{old}, \qquad λ̃ μ̃ = t λ μ + (1-t) λ^{old} μ^{old}.

g(t) = Σ_k KL(π̃_k(t)‖π^{old}_k) rises monotonically from 0 (t = 0) to m (t = 1): its derivative
is t·Var_{π̃(t)}[log π/π^{old}] ≥ 0. The dual's optimality condition is g(t*) = ε when m > ε, and
t* = 1 (η = 0) otherwise.

- Fixed, equal stds (:func:`project_mean`): λ̃ = λ, μ̃ = μ^{old} + t(μ − μ^{old}), and
  g(t) = t²·m, so t* = √(ε/m): one joint rescaling of every step's mean step — in closed form.
- Learned diagonal stds (:func:`project_gaussian`): t* solves the scalar equation g(t) = ε by
  bisection, batched over states in float64. Its gradient comes from the implicit function
  theorem: g(t*(θ), θ) = ε gives dt*/dθ = −(∂g/∂θ)/(∂g/∂t), evaluated by autograd on g at t*
  (a custom :class:`torch.autograd.Function`), so the projection's gradients are exact.
"""

from __future__ import annotations

import torch


def diagonal_gaussian_kl(
    mean: torch.Tensor, std: torch.Tensor, other_mean: torch.Tensor, other_std: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean, diag std²) ‖ N(other_mean, diag other_std²)), summed over the last axis: [..., d] → [...].

    Example:
        >>> import torch
        >>> float(diagonal_gaussian_kl(torch.ones(1, 2), torch.ones(1, 2), torch.zeros(1, 2), torch.ones(1, 2))[0])
        1.0
    """
    variance_ratio = (std / other_std).pow(2)
    mahalanobis = ((mean - other_mean) / other_std).pow(2)
    return 0.5 * (variance_ratio - 1 - variance_ratio.log() + mahalanobis).sum(-1)


def project_mean(mean: torch.Tensor, old_mean: torch.Tensor, std: torch.Tensor, epsilon: float) -> torch.Tensor:
    r"""Closest means, in trajectory KL with fixed stds σ_k, inside the ball of radius ε around the old means.

    With m = Σ_k ‖μ_k − μ^{old}_k‖²/(2σ_k²) per state: μ̃_k = μ^{old}_k + (μ_k − μ^{old}_k)·√(ε/m) for
    every step if m > ε, and μ̃ = μ otherwise (see the module docstring).
    Differentiable by ordinary autograd.

    Args:
        mean: the network's means [*B, K, d].
        old_mean: the old policy's means [*B, K, d].
        std: the stds σ_k shared by both, broadcastable to [*B, K, d].
        epsilon: ε > 0, the trajectory-KL budget per state.

    Returns:
        the projected means [*B, K, d].

    Example:
        >>> import torch
        >>> old, new, std = torch.zeros(1, 2, 1), torch.full((1, 2, 1), 2.0), torch.ones(2, 1)
        >>> projected = project_mean(new, old, std, epsilon=1.0)  # m = 4 > 1: scaled by √(1/4)
        >>> projected.flatten().tolist()
        [1.0, 1.0]
    """
    _check_epsilon(epsilon)
    trajectory_kl = ((mean - old_mean) / std).pow(2).sum((-2, -1)) / 2
    # clamp_min keeps the scale's gradient finite (and zero) inside the region.
    scale = (epsilon / trajectory_kl.clamp_min(epsilon)).sqrt()[..., None, None]
    projected = old_mean + (mean - old_mean) * scale
    # The identity inside the region, exactly (old + (new − old) can round off new).
    return torch.where((trajectory_kl > epsilon)[..., None, None], projected, mean)


def project_gaussian(
    mean: torch.Tensor,
    std: torch.Tensor,
    old_mean: torch.Tensor,
    old_std: torch.Tensor,
    epsilon: float,
    iterations: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Closest diagonal Gaussians, in trajectory KL, inside the ball of radius ε around the old ones.

    Solves the problem of the module docstring for means and stds together: per state one
    t* ∈ (0, 1], then λ̃ = t*λ + (1−t*)λ^{old} and μ̃ = (t*λμ + (1−t*)λ^{old}μ^{old})/λ̃ for every
    step. t* is found by ``iterations`` bisection steps in float64 and is always taken on the
    feasible side, so the projected trajectory KL never exceeds ε (up to the round-off of the
    inputs' dtype). Gradients are exact (implicit function theorem, see the module docstring).

    Args:
        mean, std: the network's Gaussians, broadcastable to [*B, K, d].
        old_mean, old_std: the old policy's, broadcastable to the same shape.
        epsilon: ε > 0, the trajectory-KL budget per state.
        iterations: bisection steps (64 resolves t to float64 precision).

    Returns:
        the projected means and stds, each [*B, K, d].

    Example:
        >>> import torch
        >>> mean, std = torch.randn(4, 3, 2), torch.rand(3, 2) + 0.5
        >>> new_mean, new_std = project_gaussian(mean, std, torch.zeros(4, 3, 2), torch.ones(3, 2), epsilon=0.1)
        >>> kl = diagonal_gaussian_kl(new_mean, new_std, torch.zeros(4, 3, 2), torch.ones(4, 3, 2)).sum(-1)
        >>> bool((kl <= 0.1 * (1 + 1e-5)).all())
        True
    """
    _check_epsilon(epsilon)
    mean, std, old_mean, old_std = torch.broadcast_tensors(mean, std, old_mean, old_std)
    t = _InterpolationWeight.apply(mean, std, old_mean, old_std, epsilon, iterations)
    projected_mean, projected_std = _interpolate(t, mean, std, old_mean, old_std)
    inside = (t == 1)[..., None, None]
    # The identity inside the region, exactly (the interpolation can round off at t = 1).
    return torch.where(inside, mean, projected_mean), torch.where(inside, std, projected_std)


def _check_epsilon(epsilon: float) -> None:
    if not epsilon > 0:
        raise ValueError(f"the trust-region radius epsilon must be > 0, got {epsilon}")


def _interpolate(
    t: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, old_mean: torch.Tensor, old_std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The geometric mixture π^t π_old^{1−t} (normalized) of diagonal Gaussians; ``t`` [*B] → means, stds [*B, K, d]."""
    t = t[..., None, None]
    precision, old_precision = std.pow(-2), old_std.pow(-2)
    mixed_precision = t * precision + (1 - t) * old_precision
    mixed_mean = (t * precision * mean + (1 - t) * old_precision * old_mean) / mixed_precision
    return mixed_mean, mixed_precision.rsqrt()


def _interpolated_kl(
    t: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, old_mean: torch.Tensor, old_std: torch.Tensor
) -> torch.Tensor:
    """g(t) = trajectory KL(π̃(t) ‖ π_old) per state [*B]."""
    mixed_mean, mixed_std = _interpolate(t, mean, std, old_mean, old_std)
    return diagonal_gaussian_kl(mixed_mean, mixed_std, old_mean, old_std).sum(-1)


class _InterpolationWeight(torch.autograd.Function):
    """t*(μ, σ, μ_old, σ_old) per state: bisection forward, implicit-function-theorem backward."""

    @staticmethod
    def forward(ctx, mean, std, old_mean, old_std, epsilon: float, iterations: int):
        inputs64 = [x.double() for x in (mean, std, old_mean, old_std)]
        batch_shape = mean.shape[:-2]
        full_kl = _interpolated_kl(torch.ones(batch_shape, dtype=torch.float64, device=mean.device), *inputs64)
        active = full_kl > epsilon
        low = torch.zeros_like(full_kl)  # g(0) = 0: always feasible
        high = torch.ones_like(full_kl)
        for _ in range(iterations):
            middle = (low + high) / 2
            feasible = _interpolated_kl(middle, *inputs64) <= epsilon
            low = torch.where(feasible, middle, low)
            high = torch.where(feasible, high, middle)
        t = torch.where(active, low, torch.ones_like(low)).to(mean.dtype)
        ctx.save_for_backward(t, mean, std, old_mean, old_std)
        return t

    @staticmethod
    def backward(ctx, grad_t):
        t, *inputs = ctx.saved_tensors
        active = t < 1
        with torch.enable_grad():
            t_var = t.detach().requires_grad_()
            variables = [x.detach().requires_grad_() for x in inputs]
            kl = _interpolated_kl(t_var, *variables)
            (dkl_dt,) = torch.autograd.grad(kl.sum(), t_var, retain_graph=True)
            # On the active set g(t*, θ) = ε, so dt*/dθ = −(∂g/∂θ)/(∂g/∂t), with ∂g/∂t > 0 there.
            weight = torch.where(active, -grad_t / torch.where(active, dkl_dt, torch.ones_like(dkl_dt)), 0.0)
            grads = torch.autograd.grad(kl, variables, grad_outputs=weight)
        return (*grads, None, None)
