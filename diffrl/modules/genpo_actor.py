"""GenPO's flow policy as a TensorDict module (arXiv 2505.18763).

Symbols: B the batch shape, o the observation size, d the action dimension.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
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

    Sampling runs without gradient (the loss re-evaluates the stored latent through
    :meth:`get_dist`). When TorchRL's exploration type is deterministic (``DETERMINISTIC``,
    ``MODE`` or ``MEAN``, e.g. inside ``set_exploration_type(ExplorationType.DETERMINISTIC)``)
    the noise is zero, GenPO's deterministic evaluation action.

    Args:
        flow: the :class:`GenPOFlow`.
        observation_key: where the observation is read (Isaac Lab's own wrapper calls it
            ``"policy"``).
        action_key, latent_key, log_prob_key: where the outputs are written.
        check_finite: raise on a non-finite observation (naming the offending batch
            entries) or action (a diverged network); two host synchronizations per call.

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
        if self.check_finite and not torch.isfinite(latent).all():
            raise FloatingPointError(
                "GenPO flow produced non-finite actions from finite observations: the velocity net has diverged "
                f"(max |parameter| = {max(float(p.abs().max()) for p in self.flow.parameters()):.3g})"
            )
        log_prob = self.flow.log_prob_of_noise(noise)
        tensordict.set(self.action_key, self.flow.action_from_latent(latent))
        tensordict.set(self.latent_key, latent)
        tensordict.set(self.log_prob_key, log_prob)
        return tensordict
