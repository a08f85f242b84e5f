"""REPPO's actor: a tanh-squashed Gaussian with a state-dependent std (REPPO arXiv 2507.11019; SAC arXiv 1801.01290).

Symbols: B the batch shape, o the observation size, d the action dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import MLP

from diffrl.modules.pathwise_policy import PathwisePolicy, PathwiseSample, tanh_log_det
from diffrl.modules.velocity_net import Activation, activation_class

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SquashedGaussianActor(PathwisePolicy):
    """a = tanh(u), u ~ N(μ_θ(s), diag σ_θ(s)²), with log σ squashed into [``min_log_std``, ``max_log_std``].

    Everything is exact: log π(a|s) = Σ log N(u; μ, σ²) − Σ log(1 − tanh² u); the trust-region KL is the
    closed-form KL between the two base Gaussians, which equals the KL between the squashed policies
    because tanh is a bijection (the KL is invariant under it); the entropy estimate is −log π(a|s) of
    the sample. The deterministic action is tanh(μ_θ(s)).

    Args:
        action_dim: d.
        obs_dim: o.
        hidden_sizes: the MLP's hidden widths (it outputs μ and the raw log σ).
        activation: hidden activation.
        min_log_std, max_log_std: the range of log σ (log σ = min + (max − min)·(tanh(raw) + 1)/2).
        observation_key, action_key, log_prob_key: where the observation is read and the action and
            log π are written.
        check_finite: check observations for NaN/inf through :attr:`numerics`.

    Example:
        >>> import copy
        >>> import torch
        >>> actor = SquashedGaussianActor(action_dim=2, obs_dim=3, hidden_sizes=[16])
        >>> sample = actor.rsample(torch.randn(4, 3))
        >>> sample.action.shape, sample.log_prob.shape
        (torch.Size([4, 2]), torch.Size([4]))
        >>> float(actor.trust_region_kl(torch.randn(4, 3), copy.deepcopy(actor)).abs().max())
        0.0
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        hidden_sizes: Sequence[int] = (512, 512),
        activation: Activation = "silu",
        min_log_std: float = -5.0,
        max_log_std: float = 2.0,
        *,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        log_prob_key: NestedKey = "action_log_prob",
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            observation_key=observation_key, action_key=action_key, log_prob_key=log_prob_key, check_finite=check_finite
        )
        if not min_log_std < max_log_std:
            raise ValueError(f"need min_log_std < max_log_std, got {min_log_std}, {max_log_std}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.min_log_std, self.max_log_std = min_log_std, max_log_std
        self.network = MLP(
            in_features=obs_dim,
            out_features=2 * action_dim,
            num_cells=list(hidden_sizes),
            activation_class=activation_class(activation),
        )

    def base_distribution(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) of the pre-squash Gaussian: [*B, o] → [*B, d], [*B, d]."""
        mean, raw_log_std = self.network(observation).chunk(2, dim=-1)
        log_std = self.min_log_std + 0.5 * (self.max_log_std - self.min_log_std) * (raw_log_std.tanh() + 1)
        return mean, log_std.exp()

    def rsample(self, observation: torch.Tensor, noise: torch.Tensor | None = None) -> PathwiseSample:
        mean, std = self.base_distribution(observation)
        standard = torch.randn_like(mean) if noise is None else noise
        pre_squash = mean + std * standard
        log_prob = -(0.5 * standard.pow(2) + std.log() + _HALF_LOG_2PI).sum(-1) - tanh_log_det(pre_squash)
        return PathwiseSample(action=pre_squash.tanh(), log_prob=log_prob, entropy_estimate=-log_prob)

    def trust_region_kl(self, observation: torch.Tensor, old: PathwisePolicy) -> torch.Tensor:
        if not isinstance(old, SquashedGaussianActor):
            raise TypeError(f"the KL compares two SquashedGaussianActors, got {type(old).__name__}")
        mean, std = self.base_distribution(observation)
        with torch.no_grad():
            old_mean, old_std = old.base_distribution(observation)
        per_dim = (std / old_std).log() + (old_std.pow(2) + (old_mean - mean).pow(2)) / (2 * std.pow(2)) - 0.5
        return per_dim.sum(-1)

    def deterministic_action(self, observation: torch.Tensor) -> torch.Tensor:
        return self.base_distribution(observation)[0].tanh()

    @property
    def noise_dim(self) -> int:
        """d: action = tanh(μ(s) + σ(s) ⊙ noise)."""
        return self.action_dim

    def export_sampler(self) -> nn.Module:
        return SquashedGaussianSampler(self)

    def sampler_description(self) -> dict[str, Any]:
        return {
            "kind": "squashed_gaussian",
            "steps": 1,
            "noise_layout": "[d]: action = tanh(mean(observation) + std(observation) * noise)",
            "squash": "tanh",
        }


class SquashedGaussianSampler(nn.Module):
    """tanh(μ(s) + σ(s) ⊙ noise): [B, o], [B, d] → [B, d]."""

    def __init__(self, actor: SquashedGaussianActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        mean, std = self.actor.base_distribution(observation)
        return (mean + std * noise).tanh()
