"""GenPO's flow policy as a TensorDict module (arXiv 2505.18763).

Symbols: B the batch shape, o the observation size, d the action dimension.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import exploration_type

from diffrl.modules.generative_policy import DETERMINISTIC_EXPLORATION, GenerativePolicy
from diffrl.modules.genpo_distribution import GenPODistribution
from diffrl.modules.genpo_flow import GenPOFlow


class GenPOActor(GenerativePolicy):
    """Samples GenPO's doubled action and writes the action, the latent and its exact log-likelihood.

    Reads ``observation_key`` [*B, o] and writes

    - ``action_key`` [*B, d]: the executed action (x + y)/2;
    - ``latent_key`` [*B, 2d]: the doubled action (x, y) — the sample whose likelihood
      the loss evaluates;
    - ``log_prob_key`` [*B]: its exact log π, from the base noise (no inversion), detached.

    With the flow's learnable volume the noise is scaled by e^{ℓ(s)} inside the flow, so every path
    (sampling, :meth:`get_dist`, :meth:`export_sampler`) applies it; zero noise stays zero, so the
    deterministic action is the velocity net's F(0; s) either way.

    Sampling runs without gradient (the loss re-evaluates the stored latent through
    :meth:`get_dist`). When TorchRL's exploration type is deterministic (``DETERMINISTIC``,
    ``MODE`` or ``MEAN``, e.g. inside ``set_exploration_type(ExplorationType.DETERMINISTIC)``)
    the noise is zero, GenPO's deterministic evaluation action.

    Args:
        flow: the :class:`GenPOFlow`.
        observation_key: where the observation is read (Isaac Lab's own wrapper calls it
            ``"policy"``).
        action_key, latent_key, log_prob_key: where the outputs are written.
        check_finite: check observations and sampled latents (a diverged network) for NaN/inf
            through :attr:`numerics` (at once by default; once per rollout in the trainer).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = GenPOActor(GenPOFlow(action_dim=2, obs_dim=3, hidden_sizes=[16]))
        >>> td = actor(TensorDict({"observation": torch.randn(5, 3)}, batch_size=[5]))
        >>> td["action"].shape, td["latent_action"].shape, td["action_log_prob"].shape
        (torch.Size([5, 2]), torch.Size([5, 4]), torch.Size([5]))
    """

    def __init__(
        self,
        flow: GenPOFlow,
        *,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        latent_key: NestedKey = "latent_action",
        log_prob_key: NestedKey = "action_log_prob",
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            observation_key=observation_key, sample_key=latent_key, log_prob_key=log_prob_key, check_finite=check_finite
        )
        self.flow = flow
        self.action_key = action_key
        self.latent_key = latent_key
        self.in_keys = [observation_key]
        self.out_keys = [action_key, latent_key, log_prob_key]

    @property
    def obs_dim(self) -> int:
        return self.flow.obs_dim

    @property
    def action_dim(self) -> int:
        return self.flow.action_dim

    @property
    def noise_dim(self) -> int:
        """2d: the base noise (x_0, y_0) of the doubled action."""
        return 2 * self.flow.action_dim

    def export_sampler(self) -> nn.Module:
        return GenPOSampler(self.flow)

    def sampler_description(self) -> dict[str, Any]:
        return {
            "kind": "genpo_flow",
            "steps": self.flow.num_steps,
            "mix": self.flow.mix,
            "learnable_volume": self.flow.learnable_volume,
            "noise_layout": "[x_0 (d), y_0 (d)]: the base noise of GenPO's doubled action; action = (x_N + y_N)/2",
            "squash": None,
        }

    def get_dist(self, tensordict: TensorDictBase) -> GenPODistribution:
        """The policy's distribution over latent actions at the tensordict's observations."""
        return GenPODistribution(self.flow, self._observation(tensordict))

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        observation = self._observation(tensordict)
        noise_shape = (*observation.shape[:-1], 2 * self.flow.action_dim)
        if exploration_type() in DETERMINISTIC_EXPLORATION:
            noise = observation.new_zeros(noise_shape)
        else:
            noise = torch.randn(noise_shape, dtype=observation.dtype, device=observation.device)
        latent = self.flow(noise, observation)
        self.numerics.require_finite(latent, "GenPO latent action (the velocity net has diverged)", tensordict)
        log_prob = self.flow.log_prob_of_noise(noise, observation)
        tensordict.set(self.action_key, self.flow.action_from_latent(latent))
        tensordict.set(self.latent_key, latent)
        tensordict.set(self.log_prob_key, log_prob)
        return tensordict


class GenPOSampler(nn.Module):
    """GenPO's N-step doubled-action flow from explicit base noise: [B, o], [B, 2d] → action [B, d].

    The flow's learnable volume, when on, is part of :meth:`GenPOFlow.forward` and so of the export.
    """

    def __init__(self, flow: GenPOFlow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.flow.action_from_latent(self.flow(noise, observation))
