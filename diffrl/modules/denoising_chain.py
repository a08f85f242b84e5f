r"""A K-step Gaussian denoising chain policy, DPPO style (arXiv 2409.00588).

Symbols: B any leading batch shape, d the action dimension, o the observation size,
K the number of denoising steps, H the first hidden width of the mean network.

The chain x_K → x_{K-1} → … → x_0 is stored in **chain order**: ``chain[..., i, :]`` is
x_{K−i} (so ``chain[..., 0, :]`` is the prior draw x_K and ``chain[..., K, :]`` the action x_0),
shape [*B, K+1, d]. Per-step tensors (means, stds) have K rows in the same order: row i is
the step k = K − i, the Gaussian of x_{k−1} = ``chain[..., i+1, :]`` given x_k = ``chain[..., i, :]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import nn

from diffrl.modules.genpo_flow import standard_normal_log_prob
from diffrl.modules.noise_schedule import NoiseSchedule, ScheduleKind
from diffrl.modules.velocity_net import Activation, VelocityNet

Parameterization = Literal["epsilon", "mean"]


class StepMeans(NamedTuple):
    """Per-step means [*B, K, d] and where x̂_0 was clipped (bool [*B, K, d]; all False if never)."""

    mean: torch.Tensor
    clipped: torch.Tensor


class ChainSample(NamedTuple):
    """A sampled chain [*B, K+1, d], its per-step means [*B, K, d] and exact log-likelihood [*B]."""

    chain: torch.Tensor
    mean: torch.Tensor
    log_prob: torch.Tensor


def gaussian_chain_log_prob(chain: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Σ_k log N(x_{k−1}; μ_k, diag σ_k²) of a chain [*B, K+1, d] given means [*B, K, d] and stds [K, d] → [*B]."""
    z = (chain[..., 1:, :] - mean) / std
    return standard_normal_log_prob(z).sum(-1) - std.log().expand_as(z).sum((-2, -1))


class DenoisingChain(nn.Module):
    r"""x_K ~ N(0, I); for k = K..1, x_{k−1} ~ N(μ_θ(x_k, k, s), diag σ_k²); the action is x_0.

    The mean network is a :class:`~diffrl.modules.velocity_net.VelocityNet` over
    [x_k, s, t = k/K]. Two parameterizations:

    - ``"epsilon"`` (DDPM, DPPO): the net predicts the noise ε̂; x̂_0 = (x_k − √(1−ᾱ_k) ε̂)/√ᾱ_k,
      clipped to ±``denoised_clip`` (DPPO's ``denoised_clip_value``; without it an untrained ε̂
      turns the cosine schedule's last step, 1/√ᾱ_K ≈ 100, into an exploding chain), and
      μ = x0_coef_k · x̂_0 + xk_coef_k · x_k from the :class:`NoiseSchedule`;
    - ``"mean"``: the net outputs μ directly.

    The stds are the schedule's, floored at ``min_std``; with ``learn_std`` they become a free
    parameter per step and action dimension, σ_{k,j} = min_std + exp(ρ_{k,j}) — a smooth floor
    that keeps gradients everywhere — initialized to max(σ_k, 2·min_std) (the schedule's std
    wherever that leaves room above the floor).

    Because every step is Gaussian, the chain's log-likelihood is exact:
    log p_θ(x_{0:K−1} | x_K, s) = Σ_k log N(x_{k−1}; μ_θ(x_k, k, s), σ_k²). The prior term
    log N(x_K; 0, I) is the same for every θ and is left out (it cancels in every ratio and KL).

    Reference: Ren et al., "Diffusion Policy Policy Optimization", arXiv 2409.00588; schedule:
    Nichol & Dhariwal, arXiv 2102.09672; DDIM: Song et al., arXiv 2010.02502.

    Args:
        action_dim: d.
        obs_dim: o.
        num_steps: K.
        hidden_sizes, activation, time_embed_dim: the mean network.
        min_std: the std floor (see :class:`NoiseSchedule`).
        learn_std: learn a std per step and action dimension.
        parameterization: ``"epsilon"`` or ``"mean"``.
        schedule: ``"ddpm"`` or ``"ddim"`` variances and mean coefficients.
        ddim_eta: DDIM's η (only with ``schedule="ddim"``).
        denoised_clip: clip of x̂_0 for ``"epsilon"`` (``None``: no clip).

    Example:
        >>> import torch
        >>> chain = DenoisingChain(action_dim=2, obs_dim=3, num_steps=4, hidden_sizes=[16])
        >>> obs = torch.randn(5, 3)
        >>> sample = chain.sample(obs)
        >>> sample.chain.shape, sample.mean.shape, sample.log_prob.shape
        (torch.Size([5, 5, 2]), torch.Size([5, 4, 2]), torch.Size([5]))
        >>> torch.allclose(chain.log_prob(sample.chain, obs), sample.log_prob, atol=1e-5)
        True
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        num_steps: int = 5,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: Activation = "mish",
        time_embed_dim: int = 32,
        min_std: float = 0.1,
        learn_std: bool = False,
        parameterization: Parameterization = "epsilon",
        schedule: ScheduleKind = "ddpm",
        ddim_eta: float = 0.0,
        denoised_clip: float | None = 1.0,
    ) -> None:
        super().__init__()
        if action_dim < 1 or obs_dim < 1:
            raise ValueError(f"action_dim and obs_dim must be positive, got {action_dim}, {obs_dim}")
        if parameterization not in ("epsilon", "mean"):
            raise ValueError(f"unknown parameterization {parameterization!r}; choose 'epsilon' or 'mean'")
        if denoised_clip is not None and denoised_clip <= 0:
            raise ValueError(f"denoised_clip must be > 0 or None, got {denoised_clip}")
        if schedule == "ddpm" and ddim_eta != 0.0:
            raise ValueError("ddim_eta applies to schedule='ddim' only (DDPM is DDIM with eta=1)")
        self.action_dim, self.obs_dim, self.num_steps = action_dim, obs_dim, num_steps
        self.parameterization = parameterization
        self.denoised_clip = denoised_clip if parameterization == "epsilon" else None
        self.learn_std = learn_std
        self.schedule = NoiseSchedule(num_steps, schedule, eta=ddim_eta, min_std=min_std)
        self.net = VelocityNet(action_dim, obs_dim, hidden_sizes, activation, time_embed_dim)
        # Chain order: row i is the step k = K − i.
        self.register_buffer("times", torch.arange(num_steps, 0, -1, dtype=torch.float64) / num_steps, persistent=False)
        if learn_std:
            initial = (self.schedule.std.flip(0) - min_std).clamp_min(min_std).log()
            self.log_std_offset = nn.Parameter(initial.float().unsqueeze(-1).repeat(1, action_dim))
        else:
            self.log_std_offset = None

    @property
    def min_std(self) -> float:
        return self.schedule.min_std

    def _chain_order(self, per_step: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A schedule tensor [K] (indexed by k − 1) in chain order, shaped [K, 1] like ``like``."""
        return per_step.flip(0).to(like).unsqueeze(-1)

    def stds(self, like: torch.Tensor) -> torch.Tensor:
        """The per-step stds σ [K, d] in chain order, in ``like``'s dtype and device."""
        if self.log_std_offset is not None:
            return self.min_std + self.log_std_offset.to(like).exp()
        return self._chain_order(self.schedule.std, like).expand(self.num_steps, self.action_dim)

    def _mean(self, x: torch.Tensor, obs_features: torch.Tensor, rows: slice | int) -> StepMeans:
        """μ for inputs x [*B, d] (one step: ``rows`` an int) or [*B, K, d] (all steps: a slice)."""
        time = self.times[rows].to(x)
        output = self.net.velocity(x, obs_features, time)
        if self.parameterization == "mean":
            return StepMeans(output, torch.zeros_like(output, dtype=torch.bool))
        schedule = self.schedule
        alpha_bar = self._chain_order(schedule.alphas_cumprod[1:], x)[rows]
        denoised = (x - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()
        clipped = torch.zeros_like(denoised, dtype=torch.bool)
        if self.denoised_clip is not None:
            clipped = denoised.abs() > self.denoised_clip
            denoised = denoised.clamp(-self.denoised_clip, self.denoised_clip)
        x0_coef = self._chain_order(schedule.x0_coef, x)[rows]
        xk_coef = self._chain_order(schedule.xk_coef, x)[rows]
        return StepMeans(x0_coef * denoised + xk_coef * x, clipped)

    def step_means(self, chain: torch.Tensor, observation: torch.Tensor) -> StepMeans:
        """All K means of a stored chain in one network pass: [*B, K+1, d], [*B, o] → [*B, K, d]."""
        obs_features = self.net.encode_observation(observation).unsqueeze(-2)
        return self._mean(chain[..., :-1, :], obs_features, slice(None))

    def log_prob(self, chain: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
        """Exact log p_θ(x_{0:K−1} | x_K, s) of chains [*B, K+1, d] → [*B]."""
        return gaussian_chain_log_prob(chain, self.step_means(chain, observation).mean, self.stds(chain))

    def sample(
        self, observation: torch.Tensor, deterministic: bool = False, noise: torch.Tensor | None = None
    ) -> ChainSample:
        """Run the chain from x_K ~ N(0, I) (reparameterized: gradients flow through the means).

        ``noise`` [*B, K+1, d] gives the draws instead (x_K first, then each step's standard
        normal noise), as an exported policy takes them; zeros are the deterministic chain.

        ``deterministic=True`` runs the noise-off chain: x_K = 0 and x_{k−1} = μ_θ(x_k, k, s). With
        ``schedule="ddim", ddim_eta=0`` that is DDIM's deterministic sampler. Its ``log_prob`` is
        still the chain's density under the stochastic policy, −Σ_{k,j} log σ_{k,j} − K·d·log√(2π):
        the largest value any chain can have, not the likelihood of a deterministic policy.
        """
        shape = (*observation.shape[:-1], self.action_dim)
        obs_features = self.net.encode_observation(observation)
        stds = self.stds(observation)
        if noise is not None:
            if noise.shape[-2:] != (self.num_steps + 1, self.action_dim):
                raise ValueError(
                    f"noise must be [*B, K+1, d] = [*B, {self.num_steps + 1}, {self.action_dim}] (x_K, then one draw "
                    f"per step), got {list(noise.shape)}"
                )
            x, noise = noise[..., 0, :], noise[..., 1:, :].movedim(-2, 0)
        elif deterministic:
            x = observation.new_zeros(shape)
            noise = observation.new_zeros((self.num_steps, *shape))
        else:
            x = torch.randn(shape, dtype=observation.dtype, device=observation.device)
            noise = torch.randn((self.num_steps, *shape), dtype=observation.dtype, device=observation.device)
        states, means = [x], []
        for row in range(self.num_steps):
            mean = self._mean(x, obs_features, row).mean
            x = mean + stds[row] * noise[row]
            states.append(x)
            means.append(mean)
        noise = noise.movedim(0, -2)  # [*B, K, d]
        log_prob = standard_normal_log_prob(noise).sum(-1) - stds.log().sum()
        return ChainSample(torch.stack(states, dim=-2), torch.stack(means, dim=-2), log_prob)

    def entropy(self, like: torch.Tensor) -> torch.Tensor:
        """Exact entropy of the whole chain H(x_{0:K} | s) = (K+1)·d·½log(2πe) + Σ_{k,j} log σ_{k,j} (a scalar).

        Every step's Gaussian has a state-independent covariance, so each conditional entropy
        H(x_{k−1} | x_k, s) is a constant; this is the entropy of the chain, not of the action
        x_0 alone (which has no closed form).
        """
        stds = self.stds(like)
        return (self.num_steps + 1) * self.action_dim * 0.5 * math.log(2 * math.pi * math.e) + stds.log().sum()
