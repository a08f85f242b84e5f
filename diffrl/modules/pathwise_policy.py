"""What the pathwise family (REPPO, TruDi) asks of an actor: reparameterized samples, a trust-region KL, a mode.

The pathwise losses (:mod:`diffrl.objectives.pathwise`) differentiate Q(s, a_θ) through the sampler, so
an actor of this family offers:

- :meth:`PathwisePolicy.rsample`: an action with gradients through every random step, its
  log-probability (exact for the squashed Gaussian, DIME's bound for the diffusion actor) and the
  per-sample entropy estimate the temperature is tuned on;
- :meth:`PathwisePolicy.trust_region_kl`: the per-state KL(π_old‖π_θ) to a frozen copy of itself;
- :meth:`PathwisePolicy.deterministic_action`: the action used for evaluation and export.

As a TensorDict module it reads the observation and writes the action and its log-probability
(``"action_log_prob"``, detached), sampling without gradient. Under TorchRL's ``DETERMINISTIC`` /
``MODE`` / ``MEAN`` exploration types it writes :meth:`PathwisePolicy.deterministic_action` only.

Symbols: B the batch shape, o the observation size, d the action dimension.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import exploration_type

from diffrl.modules.generative_policy import DETERMINISTIC_EXPLORATION, ObservingPolicy


def tanh_log_det(x: torch.Tensor) -> torch.Tensor:
    """Σ_dims log(1 − tanh²(x)) = Σ 2(log 2 − x − softplus(−2x)), stable for large |x|: [*B, d] → [*B]."""
    return (2 * (math.log(2.0) - x - nn.functional.softplus(-2 * x))).sum(-1)


class PathwiseSample(NamedTuple):
    """One reparameterized draw per state."""

    action: torch.Tensor  # [*B, d], differentiable in the actor's parameters
    log_prob: torch.Tensor  # [*B]: log π(a|s), or the actor's documented estimate of it
    entropy_estimate: torch.Tensor  # [*B]: the per-sample quantity whose mean estimates the entropy


class PathwisePolicy(ObservingPolicy):
    """Base of the pathwise family's actors (see the module docstring).

    Args:
        observation_key: where the observation [*B, o] is read.
        action_key, log_prob_key: where the action [*B, d] and its log-probability [*B] are written.
        check_finite: check observations for NaN/inf through :attr:`numerics`.
    """

    obs_dim: int
    action_dim: int

    def __init__(
        self,
        *,
        observation_key: NestedKey,
        action_key: NestedKey,
        log_prob_key: NestedKey,
        check_finite: bool,
    ) -> None:
        super().__init__(observation_key=observation_key, check_finite=check_finite)
        self.action_key, self.log_prob_key = action_key, log_prob_key
        self.in_keys = [observation_key]
        self.out_keys = [action_key, log_prob_key]

    @abstractmethod
    def rsample(self, observation: torch.Tensor) -> PathwiseSample:
        """One reparameterized sample per observation [*B, o]."""

    @abstractmethod
    def trust_region_kl(self, observation: torch.Tensor, old: PathwisePolicy) -> torch.Tensor:
        """KL(π_old(·|s) ‖ π_θ(·|s)) per state [*B], differentiable in this actor's parameters only."""

    @abstractmethod
    def deterministic_action(self, observation: torch.Tensor) -> torch.Tensor:
        """The evaluation / deployment action [*B, d]."""

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        observation = self._observation(tensordict)
        if exploration_type() in DETERMINISTIC_EXPLORATION:
            # The mode has no density to report: only the action is written.
            tensordict.set(self.action_key, self.deterministic_action(observation))
            return tensordict
        sample = self.rsample(observation)
        tensordict.set(self.action_key, sample.action)
        tensordict.set(self.log_prob_key, sample.log_prob)
        return tensordict
