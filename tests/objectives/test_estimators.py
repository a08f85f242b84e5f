"""KL, entropy and ESS estimators against closed forms and hand-computed cases."""

from __future__ import annotations

import math

import torch

from diffrl.objectives.estimators import (
    effective_sample_size,
    entropy_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
    max_ratio,
)


def gaussian_log_ratio(n: int, seed: int) -> tuple[torch.Tensor, float]:
    """Samples a ∼ π_old = N(0, 1), log_ratio = log N(a; μ, σ²) − log N(a; 0, 1), and the true KL(π_old‖π_θ)."""
    generator = torch.Generator().manual_seed(seed)
    mu, sigma = 0.3, 1.2
    a = torch.randn(n, generator=generator, dtype=torch.float64)
    new = torch.distributions.Normal(mu, sigma)
    old = torch.distributions.Normal(0.0, 1.0)
    true_kl = math.log(sigma) + (1.0 + mu**2) / (2 * sigma**2) - 0.5
    return new.log_prob(a) - old.log_prob(a), true_kl


def test_k1_and_k3_are_unbiased_within_four_standard_errors():
    log_ratio, true_kl = gaussian_log_ratio(200_000, 0)
    for per_sample in (-log_ratio, torch.expm1(log_ratio) - log_ratio):
        standard_error = per_sample.std().item() / math.sqrt(per_sample.numel())
        estimate = per_sample.mean().item()
        assert abs(estimate - true_kl) < 4 * standard_error
    assert abs(kl_k1(log_ratio).item() - (-log_ratio).mean().item()) < 1e-15
    assert abs(kl_k3(log_ratio).item() - (torch.expm1(log_ratio) - log_ratio).mean().item()) < 1e-15


def test_k3_has_lower_variance_than_k1_for_close_policies():
    log_ratio, _ = gaussian_log_ratio(50_000, 1)
    small = 0.1 * log_ratio  # a closer pair of policies
    assert (torch.expm1(small) - small).var() < small.var()


def test_estimators_on_a_hand_computed_case():
    log_ratio = torch.tensor([0.0, math.log(2.0), -math.log(2.0)])
    assert kl_k1(log_ratio).item() == 0.0
    assert abs(kl_k2(log_ratio).item() - math.log(2.0) ** 2 / 3) < 1e-7
    # k3 per sample: (r − 1) − log r → 0, 1 − log 2, −½ + log 2
    assert abs(kl_k3(log_ratio).item() - 0.5 / 3) < 1e-7
    assert abs(entropy_estimate(torch.tensor([-1.0, -3.0])).item() - 2.0) < 1e-7


def test_effective_sample_size_hand_computed():
    assert abs(effective_sample_size(torch.zeros(10)).item() - 1.0) < 1e-6
    # weights (1, 1, 2, 4): (Σw)² / (n Σw²) = 64 / (4 · 22)
    weights = torch.tensor([1.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    assert abs(effective_sample_size(weights.log()).item() - 64 / 88) < 1e-6
    # e^{2·500} overflows float64: the log-space form stays exact
    assert abs(effective_sample_size(weights.log() + 500.0).item() - 64 / 88) < 1e-12


def test_masked_estimators_equal_the_estimators_of_the_kept_samples():
    generator = torch.Generator().manual_seed(5)
    log_ratio = torch.randn(40, 1, generator=generator, dtype=torch.float64) * 0.3
    keep = torch.rand(40, 1, generator=generator) > 0.3
    kept = log_ratio[keep]
    for estimator in (kl_k1, kl_k2, kl_k3, effective_sample_size, max_ratio):
        torch.testing.assert_close(estimator(log_ratio, keep), estimator(kept), rtol=1e-12, atol=1e-12)


def test_knn_entropy_matches_the_gaussian_entropy_within_four_standard_errors():
    """Kozachenko–Leonenko on N(0, Σ) in 1-D and 2-D: the mean of 20 independent estimates (n = 2000 each) lies
    within 4 standard errors of H = ½ log det(2πeΣ), plus the estimator's O(1/n) bias allowance of 1/n."""
    from diffrl.objectives.estimators import knn_entropy

    for covariance in (torch.tensor([[0.3]]), torch.tensor([[1.0, 0.6], [0.6, 0.8]])):
        covariance = covariance.double()
        d = covariance.shape[0]
        truth = 0.5 * math.log((2 * math.pi * math.e) ** d * float(torch.linalg.det(covariance)))
        root = torch.linalg.cholesky(covariance)
        generator = torch.Generator().manual_seed(d)
        estimates = torch.stack(
            [knn_entropy(torch.randn(2000, d, generator=generator, dtype=torch.float64) @ root.T) for _ in range(20)]
        )
        standard_error = estimates.std() / math.sqrt(len(estimates))
        assert abs(float(estimates.mean()) - truth) < 4 * standard_error + 1 / 2000, (estimates.mean(), truth)


def test_knn_entropy_refuses_repeated_points_and_bad_k():
    import pytest

    from diffrl.objectives.estimators import knn_entropy

    with pytest.raises(ValueError, match="distance 0"):
        knn_entropy(torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="1 <= k < n"):
        knn_entropy(torch.randn(3, 1), k=3)
    # Close but distinct points are not ties (a matmul-based distance would round them to 0).
    close = torch.tensor([[1.0], [1.0 + 1e-9], [2.0]], dtype=torch.float64)
    assert math.isfinite(float(knn_entropy(close)))
