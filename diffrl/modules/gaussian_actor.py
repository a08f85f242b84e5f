"""The Gaussian PPO baseline's policy: an MLP mean with a learned state-independent std (rsl_rl style).

Symbols: B the batch shape, o the observation size, d the action dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import AddStateIndependentNormalScale, TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import MLP, IndependentNormal, ProbabilisticActor

from diffrl.modules.generative_policy import DETERMINISTIC_EXPLORATION, read_observation
from diffrl.modules.velocity_net import Activation, activation_class

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class GaussianActor(ProbabilisticActor):
    """π_θ(a|s) = N(μ_θ(s), diag(σ²)) with σ = exp(log σ) a learned parameter shared by all states.

    The policy of rsl_rl's ``ActorCritic`` (Isaac Lab's reference PPO): an MLP mean and a
    state-independent standard deviation, here log-parameterized (TorchRL's
    ``AddStateIndependentNormalScale`` with the ``exp`` mapping). Reads ``observation_key``
    [*B, o] and writes ``"loc"`` and ``"scale"`` [*B, d], ``"action"`` [*B, d] and
    ``"action_log_prob"`` [*B] (summed over action dimensions, the shape TorchRL's PPO losses
    need). Under TorchRL's ``DETERMINISTIC`` exploration type the action is the mean μ_θ(s).

    Reference: PPO, Schulman et al., arXiv 1707.06347; rsl_rl, Rudin et al., arXiv 2109.11978.

    Args:
        action_dim: d.
        obs_dim: o.
        hidden_sizes: the mean MLP's hidden widths (rsl_rl Ant: ``[400, 200, 100]``).
        activation: hidden activation (rsl_rl: ``elu``).
        init_std: σ at initialization, the same for every action dimension (rsl_rl: 1.0).
        min_std: lower bound of σ; a log σ below log(min_std) is clamped to it.
        observation_key: where the observation is read.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> actor = GaussianActor(action_dim=2, obs_dim=3, hidden_sizes=[16])
        >>> td = actor(TensorDict({"observation": torch.randn(5, 3)}, batch_size=[5]))
        >>> td["action"].shape, td["action_log_prob"].shape
        (torch.Size([5, 2]), torch.Size([5]))
        >>> with set_exploration_type(ExplorationType.DETERMINISTIC):
        ...     td = actor(td)
        >>> torch.equal(td["action"], td["loc"])
        True
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        hidden_sizes: Sequence[int] = (400, 200, 100),
        activation: Activation = "elu",
        init_std: float = 1.0,
        min_std: float = 1e-4,
        observation_key: NestedKey = "observation",
    ) -> None:
        if init_std <= 0 or min_std <= 0 or init_std < min_std:
            raise ValueError(f"need 0 < min_std <= init_std, got {init_std=}, {min_std=}")
        mean = MLP(
            in_features=obs_dim,
            out_features=action_dim,
            num_cells=list(hidden_sizes),
            activation_class=activation_class(activation),
        )
        scale = AddStateIndependentNormalScale(
            action_dim, scale_mapping="exp", scale_lb=min_std, init_value=math.log(init_std)
        )
        super().__init__(
            TensorDictModule(nn.Sequential(mean, scale), in_keys=[observation_key], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            out_keys=["action"],
            distribution_class=IndependentNormal,
            return_log_prob=True,
            default_interaction_type=ExplorationType.RANDOM,
        )
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.observation_key = observation_key

    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        """Sample as TorchRL's ``ProbabilisticActor`` does, in closed form.

        The same keys and values as the parent's forward (``loc``, ``scale``, ``action`` and the
        summed ``action_log_prob``; the mean under a deterministic exploration type), without building
        a distribution object on every collection step. The losses still evaluate log-likelihoods
        through :meth:`get_dist`.
        """
        loc, scale = self.module[0].module(read_observation(tensordict, self.observation_key, self))
        if exploration_type() in DETERMINISTIC_EXPLORATION:
            action = loc
        else:
            action = torch.addcmul(loc, scale, torch.randn_like(loc))
        standardized = (action - loc) / scale
        log_prob = -(0.5 * standardized.pow(2) + scale.log() + _HALF_LOG_2PI).sum(-1)
        tensordict.update({"loc": loc, "scale": scale, "action": action, "action_log_prob": log_prob})
        return tensordict

    @property
    def noise_dim(self) -> int:
        """d: action = μ_θ(s) + σ ⊙ noise."""
        return self.action_dim

    def export_sampler(self) -> nn.Module:
        return GaussianSampler(self.module[0].module)

    def sampler_description(self) -> dict[str, Any]:
        return {
            "kind": "gaussian",
            "steps": 1,
            "noise_layout": "[d]: action = mean(observation) + std * noise",
            "squash": None,
        }


class GaussianSampler(nn.Module):
    """The reparameterized sample μ_θ(s) + σ ⊙ noise: [B, o], [B, d] → [B, d]."""

    def __init__(self, loc_and_scale: nn.Module) -> None:
        super().__init__()
        self.loc_and_scale = loc_and_scale  # nn.Sequential(mean MLP, AddStateIndependentNormalScale)

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        loc, scale = self.loc_and_scale(observation)
        return loc + scale * noise
