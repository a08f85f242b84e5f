"""FPO++'s flow-matching policy as a TensorDict module (Yi et al., arXiv 2602.02481; FPO: arXiv 2507.21053).

Symbols: B the batch shape, o the observation size, d the action dimension, M the number of
(ε, t) pairs stored per sample.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import exploration_type

from diffrl.modules.cfm_flow import CFMFlow
from diffrl.modules.generative_policy import DETERMINISTIC_EXPLORATION, ObservingPolicy


class FPOActor(ObservingPolicy):
    """Samples a flow action and stores what FPO++'s ratio needs: M (ε, t) pairs and their CFM losses.

    Reads ``observation_key`` [*B, o] and writes

    - ``action_key`` [*B, d]: the flow's x_0 from x_1 ~ N(0, I), plus N(0, ``action_noise_std``²)
      noise (FPO++'s ``action_perturb_std``, "an entropy regularizer"): the executed and stored action;
    - ``cfm_noise_key`` [*B, M, d] and ``cfm_time_key`` [*B, M]: fresh pairs (ε, t)
      (:meth:`CFMFlow.draw_pairs`);
    - ``cfm_loss_key`` [*B, M]: ℓ_old of the action at each pair under the rollout policy, detached —
      the old side of FPO++'s per-pair ratio.

    A flow policy has no tractable likelihood here: the actor writes no log-probability, and the
    loss (:class:`~diffrl.objectives.fpo.FPOPlusPlusLoss`) works with CFM-loss differences instead.
    Sampling runs without gradient. When TorchRL's exploration type is deterministic
    (``DETERMINISTIC``, ``MODE`` or ``MEAN``) the flow starts from x_1 = 0 and no noise is added:
    FPO++'s zero-noise evaluation.

    Args:
        flow: the :class:`~diffrl.modules.cfm_flow.CFMFlow`.
        num_cfm_pairs: M (FPO++: 16 for quadrupeds, 32 for humanoids).
        action_noise_std: the std of the noise added to the flow's action (FPO++: 0.02).
        observation_key: where the observation is read (Isaac Lab's own wrapper: ``"policy"``).
        action_key, cfm_noise_key, cfm_time_key, cfm_loss_key: where the outputs are written.
        check_finite: check observations for NaN/inf through :attr:`numerics` (at once by default;
            once per rollout in the trainer).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = FPOActor(CFMFlow(action_dim=2, obs_dim=3, hidden_sizes=[16], num_steps=4), num_cfm_pairs=8)
        >>> td = actor(TensorDict({"observation": torch.randn(5, 3)}, batch_size=[5]))
        >>> td["action"].shape, td["cfm_noise"].shape, td["cfm_loss"].shape
        (torch.Size([5, 2]), torch.Size([5, 8, 2]), torch.Size([5, 8]))
    """

    def __init__(
        self,
        flow: CFMFlow,
        *,
        num_cfm_pairs: int = 16,
        action_noise_std: float = 0.02,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        cfm_noise_key: NestedKey = "cfm_noise",
        cfm_time_key: NestedKey = "cfm_time",
        cfm_loss_key: NestedKey = "cfm_loss",
        check_finite: bool = True,
    ) -> None:
        if num_cfm_pairs < 1:
            raise ValueError(f"num_cfm_pairs must be >= 1, got {num_cfm_pairs}")
        if not action_noise_std >= 0:
            raise ValueError(f"action_noise_std must be >= 0, got {action_noise_std}")
        super().__init__(observation_key=observation_key, check_finite=check_finite)
        self.flow = flow
        self.num_cfm_pairs = num_cfm_pairs
        self.action_noise_std = action_noise_std
        self.action_key = action_key
        self.cfm_noise_key, self.cfm_time_key, self.cfm_loss_key = cfm_noise_key, cfm_time_key, cfm_loss_key
        self.in_keys = [observation_key]
        self.out_keys = [action_key, cfm_noise_key, cfm_time_key, cfm_loss_key]

    @property
    def obs_dim(self) -> int:
        return self.flow.obs_dim

    @property
    def action_dim(self) -> int:
        return self.flow.action_dim

    @property
    def noise_dim(self) -> int:
        """2·d: x_1, then the action noise's standard normal draw."""
        return 2 * self.flow.action_dim

    def export_sampler(self) -> nn.Module:
        return FPOSampler(self.flow, self.action_noise_std)

    def sampler_description(self) -> dict[str, Any]:
        return {
            "kind": "fpo_flow_matching",
            "steps": self.flow.num_steps,
            "noise_layout": "[2, d] row-major: x_1 (the flow's start), then eps of the added action noise",
            "action_noise_std": self.action_noise_std,
            "squash": None,
        }

    def cfm_loss(
        self, tensordict: TensorDictBase, action: torch.Tensor, noise: torch.Tensor, time: torch.Tensor
    ) -> torch.Tensor:
        """ℓ_θ of a stored action at its stored pairs [*B, M], with gradient, at the tensordict's (checked)
        observation: the new side of FPO++'s ratio (the loss passes the tensors its own keys name)."""
        return self.flow.cfm_loss(self._observation(tensordict), action, noise, time)

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        observation = self._observation(tensordict)
        batch_shape = observation.shape[:-1]
        shape = (*batch_shape, self.action_dim)
        like = {"dtype": observation.dtype, "device": observation.device}
        if exploration_type() in DETERMINISTIC_EXPLORATION:
            action = self.flow.sample(observation, torch.zeros(shape, **like))
        else:
            action = self.flow.sample(observation, torch.randn(shape, **like))
            action = action + self.action_noise_std * torch.randn(shape, **like)
        noise, time = self.flow.draw_pairs(batch_shape, self.num_cfm_pairs, observation)
        tensordict.set(self.action_key, action)
        tensordict.set(self.cfm_noise_key, noise)
        tensordict.set(self.cfm_time_key, time)
        tensordict.set(self.cfm_loss_key, self.flow.cfm_loss(observation, action, noise, time))
        return tensordict


class FPOSampler(nn.Module):
    """The flow action from explicit noise: [B, o], [B, 2·d] → action [B, d] (zeros: the deterministic action)."""

    def __init__(self, flow: CFMFlow, action_noise_std: float) -> None:
        super().__init__()
        self.flow, self.action_noise_std = flow, action_noise_std

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        start, action_noise = noise.chunk(2, dim=-1)
        return self.flow.sample(observation, start) + self.action_noise_std * action_noise
