r"""A conditional-flow-matching policy's flow: Euler sampling and per-pair CFM losses (FPO++, arXiv 2602.02481).

Symbols: B the batch shape, o the observation size, d the action dimension, M the number of
(ε, t) pairs per sample, N the number of Euler steps. Flow time runs from t = 1 (noise) to
t = 0 (action), as in FPO++'s code: x_t = t·ε + (1 − t)·a, whose velocity dx_t/dt is u = ε − a.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from diffrl.modules.velocity_net import Activation, VelocityNet

LossReduction = Literal["sqrt", "mean", "sum"]


class CFMFlow(nn.Module):
    r"""The velocity field v_θ(x_t, s, t) of a flow policy, its sampler, and its CFM loss.

    Sampling integrates dx/dt = v_θ from x_1 (standard normal noise; zeros give the deterministic
    action) to x_0 with N explicit Euler steps of size 1/N. The conditional-flow-matching loss of an
    action a at a pair (ε, t) is

    .. math::

        ℓ_θ(a; ε, t, s) = \rho\big(\lVert v_θ(t ε + (1 − t) a, s, t) − (ε − a)\rVert^2\big)

    with the reduction ρ over action dimensions: ``"sqrt"`` (sum / √d, FPO++'s default, which keeps
    gradient magnitudes alike across action sizes), ``"mean"`` or ``"sum"``. FPO (arXiv 2507.21053)
    uses −ℓ as a surrogate for log π_θ(a|s) up to a constant (an ELBO with uniform weighting);
    it is not a likelihood, and nothing here calls it one.

    The flow times of the pairs follow FPO++'s Beta(1, β) law on [0.005, 0.995]:
    t = 0.005 + 0.99·(1 − (1 − u)^{1/β}), u ~ U(0, 1) (β = 1: uniform).

    Args:
        action_dim: d.
        obs_dim: o.
        hidden_sizes: the velocity MLP's widths (FPO++ locomotion: 3 × 256).
        activation: its activation (FPO++: ELU).
        time_embed_dim: the flow-time embedding size (FPO++: 8; diffrl's sinusoidal embedding and MLP).
        num_steps: N, Euler steps per sample (FPO++: 64).
        loss_reduction: ρ above.
        time_beta: β of the pairs' time law.

    Example:
        >>> flow = CFMFlow(action_dim=2, obs_dim=3, hidden_sizes=[16], num_steps=4)
        >>> observation = torch.randn(5, 3)
        >>> flow.sample(observation, torch.zeros(5, 2)).shape
        torch.Size([5, 2])
        >>> noise, time = flow.draw_pairs((5,), 8, observation)
        >>> flow.cfm_loss(observation, torch.zeros(5, 2), noise, time).shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        hidden_sizes: Sequence[int] = (256, 256, 256),
        activation: Activation = "elu",
        time_embed_dim: int = 8,
        num_steps: int = 64,
        loss_reduction: LossReduction = "sqrt",
        time_beta: float = 1.0,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if loss_reduction not in ("sqrt", "mean", "sum"):
            raise ValueError(f"loss_reduction must be 'sqrt', 'mean' or 'sum', got {loss_reduction!r}")
        if not time_beta > 0:
            raise ValueError(f"time_beta must be > 0, got {time_beta}")
        self.action_dim, self.obs_dim = action_dim, obs_dim
        self.num_steps = num_steps
        self.loss_reduction = loss_reduction
        self.time_beta = time_beta
        self.velocity_net = VelocityNet(action_dim, obs_dim, hidden_sizes, activation, time_embed_dim)

    def sample(self, observation: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """x_0 from x_1 = ``start`` [*B, d] by N Euler steps of dx/dt = v_θ, t from 1 to 0: [*B, d]."""
        features = self.velocity_net.encode_observation(observation)
        # The Euler grid t_i = 1 − i/N, i = 0..N−1, in the observation's precision.
        steps = torch.arange(self.num_steps, dtype=observation.dtype, device=observation.device)
        time_features = self.velocity_net.encode_time(1.0 - steps / self.num_steps)
        step = 1.0 / self.num_steps
        x = start
        for index in range(self.num_steps):
            x = x - step * self.velocity_net.velocity_in_context(x, features + time_features[index])
        return x

    def draw_pairs(
        self, batch_shape: Sequence[int], num_pairs: int, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """M fresh pairs per sample: ε [*B, M, d] and t [*B, M] (dtype and device of ``like``)."""
        shape = (*batch_shape, num_pairs)
        noise = torch.randn(*shape, self.action_dim, dtype=like.dtype, device=like.device)
        uniform = torch.rand(shape, dtype=like.dtype, device=like.device)
        time = 0.005 + 0.99 * (1.0 - (1.0 - uniform).pow(1.0 / self.time_beta))
        return noise, time

    def cfm_loss(
        self, observation: torch.Tensor, action: torch.Tensor, noise: torch.Tensor, time: torch.Tensor
    ) -> torch.Tensor:
        """ℓ_θ(a; ε, t, s) per pair: observation [*B, o], action [*B, d], ε [*B, M, d], t [*B, M] → [*B, M]."""
        action = action.unsqueeze(-2)
        t = time.unsqueeze(-1)
        interpolant = t * noise + (1.0 - t) * action
        features = self.velocity_net.encode_observation(observation).unsqueeze(-2)
        velocity = self.velocity_net.velocity(interpolant, features, time)
        squared = (velocity - (noise - action)).square().sum(-1)
        if self.loss_reduction == "sqrt":
            return squared / math.sqrt(self.action_dim)
        if self.loss_reduction == "mean":
            return squared / self.action_dim
        return squared
