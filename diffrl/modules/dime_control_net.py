"""The control network u_θ(x, s, k) of DIME's controlled Langevin SDE (arXiv 2502.02316, as TruDi uses it).

Symbols: B the batch, d the action dimension, o the observation size, K the number of SDE steps,
E the step-embedding size, H the hidden width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffrl.modules.velocity_net import Activation, make_activation


class FourierStepEmbedding(nn.Module):
    """emb(k) = MLP([sin(ω·k + φ), cos(ω·k + φ)]) of the integer SDE step k, ω evenly spaced in [0.1, 100].

    The spacing is the authors' (linear, as in the TruDi reference's control net): ω_i = 0.1 + i·99.9/(F − 1).
    The phases φ are learned and start at 0; the two-layer MLP maps the 2F features to E.

    Args:
        dim: E.
        num_frequencies: F.
        activation: the MLP's activation.
    """

    def __init__(self, dim: int = 16, num_frequencies: int = 32, activation: Activation = "gelu") -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.linspace(0.1, 100.0, num_frequencies))
        self.phase = nn.Parameter(torch.zeros(num_frequencies))
        hidden = num_frequencies
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_frequencies, hidden), make_activation(activation), nn.Linear(hidden, dim)
        )

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        """[K] step indices → [K, E]."""
        angles = steps.to(self.frequencies.dtype).unsqueeze(-1) * self.frequencies + self.phase
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class DIMEControlNet(nn.Module):
    """u_θ([x, s, emb(k)]): an MLP with LayerNorm on every hidden layer after the first, output near 0.

    The output layer's weights are scaled by ``output_scale`` (1e-8, the authors' value) and its
    bias is 0, so that at initialization u_θ ≈ 0: the policy *is* the prior Langevin SDE and the
    trust-region KL between it and its copy is 0.

    Args:
        action_dim: d.
        obs_dim: o.
        num_steps: K.
        hidden_sizes: the MLP's hidden widths (the authors: 3 × 512 with GELU and LayerNorm).
        activation: hidden activation.
        step_embed_dim: E.
        output_scale: the factor on the output layer's initial weights.

    Example:
        >>> net = DIMEControlNet(action_dim=2, obs_dim=3, num_steps=8, hidden_sizes=[16, 16])
        >>> embeddings = net.step_embeddings()
        >>> out = net(torch.randn(5, 2), torch.randn(5, 3), embeddings[0].expand(5, -1))
        >>> out.shape, bool(out.abs().max() < 1e-6)
        (torch.Size([5, 2]), True)
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        num_steps: int,
        hidden_sizes: Sequence[int] = (512, 512, 512),
        activation: Activation = "gelu",
        step_embed_dim: int = 16,
        output_scale: float = 1e-8,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("hidden_sizes must name at least one hidden layer")
        self.num_steps = num_steps
        self.step_embedding = FourierStepEmbedding(step_embed_dim)
        layers: list[nn.Module] = []
        width = action_dim + obs_dim + step_embed_dim
        for index, hidden in enumerate(hidden_sizes):
            layers.append(nn.Linear(width, hidden))
            if index > 0:
                layers.append(nn.LayerNorm(hidden))
            layers.append(make_activation(activation))
            width = hidden
        output = nn.Linear(width, action_dim)
        with torch.no_grad():
            output.weight.mul_(output_scale)
            output.bias.zero_()
        layers.append(output)
        self.mlp = nn.Sequential(*layers)

    def step_embeddings(self) -> torch.Tensor:
        """emb(k) for k = 0..K−1: [K, E] (computed once per chain)."""
        return self.step_embedding(torch.arange(self.num_steps, device=self.step_embedding.phase.device))

    def forward(self, x: torch.Tensor, observation: torch.Tensor, step_embedding: torch.Tensor) -> torch.Tensor:
        """[B, d], [B, o], [B, E] → u [B, d]."""
        return self.mlp(torch.cat([x, observation, step_embedding], dim=-1))
