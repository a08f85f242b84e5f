"""NoiseSchedule: cosine ᾱ, DDPM posterior, DDIM variances and the std floor, against the papers' formulas."""

from __future__ import annotations

import pytest
import reference_math
import torch

from diffrl.modules.noise_schedule import NoiseSchedule


def cosine_alphas_cumprod(num_steps: int) -> torch.Tensor:
    return torch.tensor(reference_math.cosine_alphas_cumprod(num_steps), dtype=torch.float64)


@pytest.mark.parametrize("num_steps", [1, 5, 20])
def test_cosine_cumulative_alphas_match_the_paper(num_steps):
    schedule = NoiseSchedule(num_steps)
    torch.testing.assert_close(schedule.alphas_cumprod, cosine_alphas_cumprod(num_steps), rtol=1e-12, atol=0)


def test_ddpm_mean_equals_ho_et_al_noise_form():
    """μ = (x_k − β_k/√(1−ᾱ_k) ε̂)/√α_k (arXiv 2006.11239 eq. 11) for random x_k and ε̂."""
    schedule = NoiseSchedule(7)
    alpha_bar = cosine_alphas_cumprod(7)
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 7, 3, dtype=torch.float64, generator=generator)
    for k in range(1, 8):
        beta = 1 - alpha_bar[k] / alpha_bar[k - 1]
        expected = (x[k - 1] - beta / (1 - alpha_bar[k]).sqrt() * eps[k - 1]) / (1 - beta).sqrt()
        denoised = (x[k - 1] - (1 - alpha_bar[k]).sqrt() * eps[k - 1]) / alpha_bar[k].sqrt()
        mean = schedule.x0_coef[k - 1] * denoised + schedule.xk_coef[k - 1] * x[k - 1]
        torch.testing.assert_close(mean, expected, rtol=1e-10, atol=1e-10)
        posterior_variance = (1 - alpha_bar[k - 1]) / (1 - alpha_bar[k]) * beta
        torch.testing.assert_close(schedule.variance[k - 1], posterior_variance, rtol=1e-12, atol=1e-15)


def test_ddim_with_eta_one_is_ddpm():
    ddpm, ddim = NoiseSchedule(6, "ddpm"), NoiseSchedule(6, "ddim", eta=1.0)
    for name in ("x0_coef", "xk_coef", "variance", "std"):
        torch.testing.assert_close(getattr(ddim, name), getattr(ddpm, name), rtol=1e-10, atol=1e-12)


def test_ddim_with_eta_zero_is_deterministic_up_to_the_floor():
    """σ = 0, so every std is the floor, and the mean is √ᾱ_{k−1} x̂_0 + √(1−ᾱ_{k−1}) ε̂ (arXiv 2010.02502 eq. 12)."""
    schedule = NoiseSchedule(5, "ddim", eta=0.0, min_std=0.05)
    alpha_bar = cosine_alphas_cumprod(5)
    assert torch.equal(schedule.variance, torch.zeros(5, dtype=torch.float64))
    assert torch.equal(schedule.std, torch.full((5,), 0.05, dtype=torch.float64))
    x0, eps = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-1.1, dtype=torch.float64)
    for k in range(1, 6):
        xk = alpha_bar[k].sqrt() * x0 + (1 - alpha_bar[k]).sqrt() * eps  # consistent (x_k, x̂_0, ε̂)
        expected = alpha_bar[k - 1].sqrt() * x0 + (1 - alpha_bar[k - 1]).sqrt() * eps
        mean = schedule.x0_coef[k - 1] * x0 + schedule.xk_coef[k - 1] * xk
        torch.testing.assert_close(mean, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("min_std", [0.01, 0.1, 0.5])
def test_std_is_the_schedule_std_floored_at_min_std(min_std):
    schedule = NoiseSchedule(5, min_std=min_std)
    torch.testing.assert_close(schedule.std, schedule.variance.sqrt().clamp_min(min_std), rtol=0, atol=0)
    assert (schedule.std >= min_std).all()
    assert schedule.std[0] == min_std  # DDPM's last step has zero posterior variance


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_steps": 0}, "at least one step"),
        ({"num_steps": 3, "kind": "vp"}, "unknown schedule kind"),
        ({"num_steps": 3, "kind": "ddim", "eta": 1.5}, "eta"),
        ({"num_steps": 3, "min_std": 0.0}, "min_std"),
    ],
)
def test_invalid_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule(**kwargs)
