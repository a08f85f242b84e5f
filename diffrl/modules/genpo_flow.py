"""GenPO's exactly invertible doubled-action flow (arXiv 2505.18763).

Symbols: B any leading batch shape, d the action dimension, o the observation size,
N the number of flow steps, p the mixing coefficient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from diffrl.modules.velocity_net import Activation, VelocityNet

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension, [*B, n] → [*B]."""
    return -0.5 * z.pow(2).sum(-1) - z.shape[-1] * _LOG_SQRT_2PI


class GenPOFlow(nn.Module):
    r"""The doubled-action flow of GenPO: an invertible map of R^{2d} with a constant Jacobian.

    The latent action ã = (x, y) ∈ R^{2d} is obtained from base noise (x_0, y_0) ~ N(0, I_{2d})
    by N steps on the grid t_i = i/N with Δt = 1/N, all sharing one velocity net v_θ:

    .. code-block:: text

        x~ = x + Δt v(y, s, t_i)          y~ = y + Δt v(x~, s, t_i)
        x' = p x~ + (1-p) y~              y' = p y~ + (1-p) x'

    Each coupling is a shear (Jacobian determinant 1) and each mixing line is triangular
    with determinant p^d, so ``log|det ∂F/∂z| = 2·N·d·log p`` for every input and θ, and

    .. math:: \log π(ã|s) = \log N(F^{-1}(ã; s); 0, I_{2d}) - 2 N d \log p

    without any Jacobian computation. The executed action is (x_N + y_N)/2.

    Reference: Ding et al., "GenPO: Generative Diffusion Models Meet On-Policy
    Reinforcement Learning", arXiv 2505.18763.

    Args:
        action_dim: d.
        obs_dim: o.
        num_steps: N (GenPO default 5).
        mix: p ∈ (0, 1] (GenPO default 0.95); 1 means no mixing.
        hidden_sizes, activation, time_embed_dim: the :class:`VelocityNet`.

    Example:
        >>> import torch
        >>> flow = GenPOFlow(action_dim=2, obs_dim=3, hidden_sizes=[32, 32])
        >>> obs, noise = torch.randn(5, 3), torch.randn(5, 4)
        >>> latent = flow(noise, obs)
        >>> torch.allclose(flow.inverse(latent, obs), noise, atol=1e-5)
        True
        >>> flow.log_prob(latent, obs).shape
        torch.Size([5])
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        num_steps: int = 5,
        mix: float = 0.95,
        hidden_sizes: Sequence[int] = (400, 200, 100),
        activation: Activation = "mish",
        time_embed_dim: int = 32,
    ) -> None:
        super().__init__()
        if not 0.0 < mix <= 1.0:
            raise ValueError(f"GenPO mixing coefficient must lie in (0, 1], got mix={mix}")
        if num_steps < 1:
            raise ValueError(f"GenPO needs at least one flow step, got num_steps={num_steps}")
        if action_dim < 1 or obs_dim < 1:
            raise ValueError(f"action_dim and obs_dim must be positive, got {action_dim}, {obs_dim}")
        self.action_dim = action_dim
        self.obs_dim = obs_dim
        self.num_steps = num_steps
        self.mix = mix
        self.velocity_net = VelocityNet(action_dim, obs_dim, hidden_sizes, activation, time_embed_dim)
        self.register_buffer("time_grid", torch.arange(num_steps) / num_steps)

    @property
    def log_abs_det_jacobian(self) -> float:
        """log|det ∂F/∂z| of the forward map: 2·N·d·log p, the same for every input."""
        return 2.0 * self.num_steps * self.action_dim * math.log(self.mix)

    def _check(self, tensor: torch.Tensor, obs: torch.Tensor, name: str) -> None:
        if tensor.shape[-1] != 2 * self.action_dim:
            raise ValueError(
                f"{name} must have last dimension 2·d = {2 * self.action_dim}, got shape {tuple(tensor.shape)}"
            )
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"observation must have last dimension {self.obs_dim}, got shape {tuple(obs.shape)}")
        if tensor.shape[:-1] != obs.shape[:-1]:
            raise ValueError(
                f"{name} batch shape {tuple(tensor.shape[:-1])} differs from observation batch shape "
                f"{tuple(obs.shape[:-1])}"
            )

    def forward(self, noise: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """F(z; s): base noise [*B, 2d] → latent action [*B, 2d]."""
        self._check(noise, obs, "noise")
        p, dt = self.mix, 1.0 / self.num_steps
        velocity = self.velocity_net.velocity_in_context
        x, y = noise.chunk(2, dim=-1)
        for context in self._contexts(obs, self._time_features(noise.dtype)):
            x = torch.add(x, velocity(y, context), alpha=dt)
            y = torch.add(y, velocity(x, context), alpha=dt)
            x = torch.lerp(y, x, p)  # p·x + (1 − p)·y
            y = torch.lerp(x, y, p)
        return torch.cat([x, y], dim=-1)

    def inverse(self, latent: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """F⁻¹(ã; s): latent action [*B, 2d] → base noise [*B, 2d], exact up to round-off."""
        self._check(latent, obs, "latent action")
        p, dt = self.mix, 1.0 / self.num_steps
        velocity = self.velocity_net.velocity_in_context
        x, y = latent.chunk(2, dim=-1)
        for context in reversed(self._contexts(obs, self._time_features(latent.dtype))):
            y = torch.add(y, x, alpha=-(1.0 - p)).div_(p)
            x = torch.add(x, y, alpha=-(1.0 - p)).div_(p)
            y = torch.sub(y, velocity(x, context), alpha=dt)
            x = torch.sub(x, velocity(y, context), alpha=dt)
        return torch.cat([x, y], dim=-1)

    def inverse_and_forward(
        self, latent: torch.Tensor, latent_obs: torch.Tensor, noise: torch.Tensor, noise_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(F⁻¹(latent; latent_obs), F(noise; noise_obs)) in 2N velocity calls instead of 4N.

        The inversion walks the steps N−1..0 while the forward map walks 0..N−1; at every point each
        needs one velocity evaluation that does not depend on the other's, so the two are stacked
        into one call of [B₁ + B₂] rows (each row with its own step's context). The results equal
        :meth:`inverse` and :meth:`forward` up to round-off. Shapes: ``latent`` [B₁, 2d], ``latent_obs``
        [B₁, o], ``noise`` [B₂, 2d], ``noise_obs`` [B₂, o] (one batch dimension each).
        """
        self._check(latent, latent_obs, "latent action")
        self._check(noise, noise_obs, "noise")
        if latent.ndim != 2 or noise.ndim != 2:
            raise ValueError("inverse_and_forward takes batches with one batch dimension, [B, 2d]")
        p, dt, rows = self.mix, 1.0 / self.num_steps, latent.shape[0]
        velocity = self.velocity_net.velocity_in_context
        time_features = self._time_features(latent.dtype)  # the same N times for both walks
        inverse_contexts = self._contexts(latent_obs, time_features)
        forward_contexts = self._contexts(noise_obs, time_features)
        x, y = latent.chunk(2, dim=-1)  # walked back to the noise
        u, w = noise.chunk(2, dim=-1)  # walked forward to a latent
        for step in range(self.num_steps):
            context = torch.cat([inverse_contexts[self.num_steps - 1 - step], forward_contexts[step]])
            y = torch.add(y, x, alpha=-(1.0 - p)).div_(p)
            x = torch.add(x, y, alpha=-(1.0 - p)).div_(p)
            both = velocity(torch.cat([x, w]), context)  # the inverse's v(x), the forward's v(w)
            y, u = torch.sub(y, both[:rows], alpha=dt), torch.add(u, both[rows:], alpha=dt)
            both = velocity(torch.cat([y, u]), context)  # the inverse's v(y), the forward's v(u)
            x, w = torch.sub(x, both[:rows], alpha=dt), torch.add(w, both[rows:], alpha=dt)
            u = torch.lerp(w, u, p)
            w = torch.lerp(u, w, p)
        return torch.cat([x, y], dim=-1), torch.cat([u, w], dim=-1)

    def _time_features(self, dtype: torch.dtype) -> torch.Tensor:
        """The N flow times' first-layer features [N, H], in one batched call."""
        return self.velocity_net.encode_time(self.time_grid.to(dtype))

    def _contexts(self, obs: torch.Tensor, time_features: torch.Tensor) -> list[torch.Tensor]:
        """Per flow step, the observation's plus the step time's first-layer features [*B, H]: computed
        once per call and shared by the step's two couplings."""
        features = self.velocity_net.encode_observation(obs)
        return [features + time_features[step] for step in range(self.num_steps)]

    def log_prob_of_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """log π(F(z)|s) from the base noise z that produced it, [*B, 2d] → [*B]: no inversion."""
        return standard_normal_log_prob(noise) - self.log_abs_det_jacobian

    def log_prob(self, latent: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Exact log π(ã|s) by inversion, [*B, 2d] → [*B]."""
        return self.log_prob_of_noise(self.inverse(latent, obs))

    @staticmethod
    def action_from_latent(latent: torch.Tensor) -> torch.Tensor:
        """The executed action (x + y)/2, [*B, 2d] → [*B, d]."""
        x, y = latent.chunk(2, dim=-1)
        return 0.5 * (x + y)
