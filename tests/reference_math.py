"""Formulas written out from the papers, independently of diffrl, for tests to check it against."""

from __future__ import annotations

import math


def cosine_alphas_cumprod(num_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> list[float]:
    """ᾱ_0..ᾱ_K of Nichol & Dhariwal's cosine schedule (arXiv 2102.09672 eq. 17), β clipped at 0.999."""
    f = [math.cos((k / num_steps + offset) / (1 + offset) * math.pi / 2) ** 2 for k in range(num_steps + 1)]
    values = [1.0]
    for k in range(1, num_steps + 1):
        values.append(values[-1] * (1 - min(1 - f[k] / f[k - 1], max_beta)))
    return values
