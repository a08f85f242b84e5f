r"""The noise schedule of a K-step Gaussian denoising chain: DDPM cosine schedule, DDIM variances.

Symbols: K the number of denoising steps, k ∈ {1, …, K} a step (the chain goes x_K → x_{k-1}
→ … → x_0), ᾱ_k the cumulative signal fraction, β_k = 1 − ᾱ_k/ᾱ_{k-1}. Per-step tensors
have shape [K] and are indexed by ``k − 1``.

Cosine schedule (Nichol & Dhariwal, arXiv 2102.09672): with f(u) = cos²((u + s)/(1 + s) · π/2),
ᾱ(u) = f(u)/f(0) on the grid u = k/K; β_k = min(1 − ᾱ(k/K)/ᾱ((k−1)/K), β_max), and ᾱ_k is
recomputed as Π_{j≤k}(1 − β_j) so that the clipped β_K stays consistent (ᾱ_0 = 1).

A denoising step, with ε̂ the noise predicted from x_k and x̂_0 = (x_k − √(1−ᾱ_k) ε̂)/√ᾱ_k:

- ``"ddpm"`` (Ho et al., arXiv 2006.11239): the posterior q(x_{k-1} | x_k, x̂_0) with mean
  √ᾱ_{k-1} β_k/(1−ᾱ_k) · x̂_0 + √α_k (1−ᾱ_{k-1})/(1−ᾱ_k) · x_k and variance
  β̃_k = (1−ᾱ_{k-1})/(1−ᾱ_k) · β_k;
- ``"ddim"`` (Song et al., arXiv 2010.02502): mean √ᾱ_{k-1} x̂_0 + √(1−ᾱ_{k-1}−σ_k²) ε̂ with
  σ_k² = η² β̃_k; η = 1 is DDPM, η = 0 the deterministic DDIM sampler.

Both means are written as ``x0_coef[k-1] · x̂_0 + xk_coef[k-1] · x_k`` (:attr:`NoiseSchedule.x0_coef`,
:attr:`NoiseSchedule.xk_coef`), the form in which x̂_0 can be clipped (DPPO's ``denoised_clip``).

**The std floor.** The sampling std is σ_k = max(√(σ_k²), ``min_std``): DDPM's β̃_1 is 0 and
DDIM(η=0) has no noise at all, so without a floor the chain's likelihood would not exist.
The floor changes only the std, never the mean coefficients (as in DPPO, arXiv 2409.00588).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

ScheduleKind = Literal["ddpm", "ddim"]


class NoiseSchedule(nn.Module):
    r"""Per-step mean coefficients and stds of a K-step denoising chain (cosine ᾱ).

    The coefficients are float64 buffers (not saved in ``state_dict``: they follow from the
    arguments); callers cast them to their tensors' dtype.

    Args:
        num_steps: K ≥ 1.
        kind: ``"ddpm"`` posterior variances or ``"ddim"`` variances with ``eta``.
        eta: DDIM's η ∈ [0, 1] (ignored for ``"ddpm"``, which is DDIM with η = 1).
        min_std: σ floor (> 0): every sampling std is at least this (see the module docstring).
        cosine_offset: s in the cosine schedule (Nichol & Dhariwal: 0.008).
        max_beta: β clip (Nichol & Dhariwal: 0.999).

    Example:
        >>> schedule = NoiseSchedule(num_steps=5, min_std=0.1)
        >>> schedule.std.shape, bool((schedule.std >= 0.1).all())
        (torch.Size([5]), True)
        >>> float(schedule.std[0])  # DDPM's last step has zero posterior variance: floored
        0.1
    """

    alphas_cumprod: torch.Tensor
    betas: torch.Tensor
    x0_coef: torch.Tensor
    xk_coef: torch.Tensor
    variance: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        num_steps: int,
        kind: ScheduleKind = "ddpm",
        eta: float = 0.0,
        min_std: float = 0.1,
        cosine_offset: float = 0.008,
        max_beta: float = 0.999,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"a denoising chain needs at least one step, got num_steps={num_steps}")
        if kind not in ("ddpm", "ddim"):
            raise ValueError(f"unknown schedule kind {kind!r}; choose 'ddpm' or 'ddim'")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"DDIM eta must lie in [0, 1], got eta={eta}")
        if min_std <= 0:
            raise ValueError(f"min_std must be > 0 (the chain likelihood needs noise), got {min_std}")
        if not 0.0 < max_beta < 1.0:
            raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
        self.num_steps, self.kind, self.eta, self.min_std = num_steps, kind, eta, min_std

        u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((u + cosine_offset) / (1 + cosine_offset) * math.pi / 2).pow(2)
        cosine_cumprod = f / f[0]
        betas = (1 - cosine_cumprod[1:] / cosine_cumprod[:-1]).clamp(max=max_beta)
        alphas_cumprod = torch.cat([betas.new_ones(1), torch.cumprod(1 - betas, 0)])
        prev, cur = alphas_cumprod[:-1], alphas_cumprod[1:]
        posterior_variance = (1 - prev) / (1 - cur) * betas
        if kind == "ddpm":
            variance = posterior_variance
            x0_coef = prev.sqrt() * betas / (1 - cur)
            xk_coef = (1 - betas).sqrt() * (1 - prev) / (1 - cur)
        else:
            variance = eta**2 * posterior_variance
            # mean = √ᾱ_{k-1} x̂_0 + √(1−ᾱ_{k-1}−σ²) ε̂ with ε̂ = (x_k − √ᾱ_k x̂_0)/√(1−ᾱ_k).
            direction = (1 - prev - variance).clamp_min(0).sqrt() / (1 - cur).sqrt()
            x0_coef = prev.sqrt() - direction * cur.sqrt()
            xk_coef = direction
        buffers = {
            "alphas_cumprod": alphas_cumprod,
            "betas": betas,
            "x0_coef": x0_coef,
            "xk_coef": xk_coef,
            "variance": variance,
            "std": variance.sqrt().clamp_min(min_std),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def extra_repr(self) -> str:
        eta = f", eta={self.eta}" if self.kind == "ddim" else ""
        return f"num_steps={self.num_steps}, kind={self.kind!r}{eta}, min_std={self.min_std}"
