r"""Monte-Carlo estimators of KL divergence, entropy and importance-sampling health.

All estimators take per-sample log-likelihoods of actions **drawn from the old (behaviour)
policy** and estimate KL(π_old || π_θ), the direction PPO's KL-adaptive learning rate
uses. With the log-ratio ``log_ratio = log π_θ(a) − log π_old(a)`` and ``r = exp(log_ratio)``
(Schulman, "Approximating KL divergence", 2020):

================  =========================  ===========  =====================================
estimator         per-sample value           bias         variance / sign
================  =========================  ===========  =====================================
k1                −log_ratio                 unbiased     high; single samples can be negative
k2                ½·log_ratio²               biased (low  low; ≥ 0; exact to second order
                                             for close π) in the log-ratio
k3                (r − 1) − log_ratio        unbiased     low; ≥ 0 per sample (log x ≤ x − 1)
================  =========================  ===========  =====================================

k1 is unbiased because E_old[−log_ratio] = KL(π_old || π_θ); k3 adds the zero-mean control
variate r − 1 (E_old[r] = 1), which lowers the variance when the policies are close.

The entropy H(π_θ(·|s)) = −E_{a∼π_θ}[log π_θ(a|s)] is estimated without bias by −log π_θ
of **fresh** samples of the current policy (:func:`entropy_estimate`), with a
reparameterized sample if its gradient is needed. A policy without a likelihood (FPO++'s flow)
still has the nearest-neighbour estimate of :func:`knn_entropy`, from samples alone.
"""

from __future__ import annotations

import math

import torch


def _mean(values: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The mean over all entries, or over those where ``keep`` is true (no data-dependent shapes: no host sync)."""
    if keep is None:
        return values.mean()
    keep = keep.to(values.dtype)
    return (values * keep).sum() / keep.sum()


def kl_k1(log_ratio: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased, high-variance KL(π_old || π_θ) estimate: mean of −log_ratio (over ``keep``, if given)."""
    return _mean(-log_ratio, keep)


def kl_k2(log_ratio: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Low-variance, biased KL estimate: mean of ½·log_ratio² (≥ 0)."""
    return 0.5 * _mean(log_ratio.pow(2), keep)


def kl_k3(log_ratio: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased, low-variance KL(π_old || π_θ) estimate: mean of (r − 1) − log r (≥ 0)."""
    return _mean(torch.expm1(log_ratio).sub(log_ratio), keep)


def entropy_estimate(log_prob_of_fresh_samples: torch.Tensor) -> torch.Tensor:
    """Unbiased entropy estimate −E[log π_θ(a)] from samples a ∼ π_θ (differentiable)."""
    return -log_prob_of_fresh_samples.mean()


def effective_sample_size(log_ratio: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Normalized effective sample size (Σw)² / (n·Σw²) ∈ (0, 1] of the importance weights (over ``keep``).

    1 means the current and behaviour policies agree on the batch; small values mean a few
    samples dominate the surrogate. Computed in log space so large ratios do not overflow.
    """
    log_w = log_ratio.flatten()
    count = log_w.numel()  # a Python number: a tensor made from it on a GPU would wait for the stream
    if keep is not None:
        keep = keep.flatten()
        log_w = log_w.masked_fill(~keep, -torch.inf)
        count = keep.sum().to(log_w.dtype)
    return torch.exp(2.0 * torch.logsumexp(log_w, 0) - torch.logsumexp(2.0 * log_w, 0)) / count


def max_ratio(log_ratio: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The largest importance ratio (over ``keep``)."""
    if keep is not None:
        log_ratio = log_ratio.masked_fill(~keep, -torch.inf)
    return log_ratio.max().exp()


def knn_entropy(samples: torch.Tensor, k: int = 1) -> torch.Tensor:
    r"""The Kozachenko–Leonenko nearest-neighbour estimate of the entropy of the law of ``samples`` [n, d].

    .. math:: \hat H = ψ(n) − ψ(k) + \log V_d + \frac{d}{n} \sum_i \log ρ_{k,i},
              \qquad V_d = \frac{π^{d/2}}{Γ(d/2 + 1)}

    with ρ_{k,i} the distance from sample i to its k-th nearest neighbour (Kozachenko & Leonenko,
    1987; the k-NN form: Kraskov, Stögbauer & Grassberger, arXiv cond-mat/0305641). Consistent, with
    a bias of order 1/n for smooth densities. Repeated points (ρ = 0, log ρ = −∞) are an error.
    O(n²) memory: meant for evaluation, not the update.

    Example:
        >>> samples = torch.randn(4000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> round(float(knn_entropy(samples)), 1), round(0.5 * math.log(2 * math.pi * math.e), 1)
        (1.4, 1.4)
    """
    n, d = samples.shape
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < n, got k={k}, n={n}")
    # The direct difference: cdist's default ‖x‖² + ‖y‖² − 2x·y cancels to 0 for close points.
    distances = torch.cdist(samples, samples, compute_mode="donot_use_mm_for_euclid_dist")
    distances.fill_diagonal_(math.inf)
    kth = distances.topk(k, dim=-1, largest=False).values[:, -1]
    if not bool((kth > 0).all()):  # one host sync: this estimator is for evaluation
        raise ValueError(
            f"{int((kth == 0).sum())} of {n} samples have a k-th nearest neighbour at distance 0 (repeated points, "
            "e.g. the float32 round-off of a concentrated policy): the estimate would be -inf; sample in float64"
        )
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    digamma = torch.special.digamma(torch.tensor([float(n), float(k)], dtype=samples.dtype, device=samples.device))
    return digamma[0] - digamma[1] + log_unit_ball + d * kth.log().mean()
