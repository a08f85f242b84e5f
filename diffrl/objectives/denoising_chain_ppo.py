"""What the PPO losses over a stored Gaussian denoising chain share (TruDi-PPO, DPPO)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey

from diffrl.modules.trudi_actor import TruDiActor
from diffrl.objectives.exact_ratio_ppo import ExactRatioPPOLoss


class DenoisingChainPPOLoss(ExactRatioPPOLoss):
    """Base of the losses that re-evaluate a :class:`~diffrl.modules.trudi_actor.TruDiActor`'s stored chain.

    It adds the rollout policy's per-step Gaussians (``denoising_means``, ``denoising_stds``,
    [*B, K, d] each) to PPO's keys, binds them to the actor's keys, and reads the stored rollout
    (:meth:`rollout_chain`); subclasses write their trust region (a whole-chain KL projection,
    per-step ratio clips).
    """

    @dataclass
    class _AcceptedKeys(ExactRatioPPOLoss._AcceptedKeys):
        """Adds the rollout policy's per-step Gaussians, [*B, K, d] each, to PPO's keys."""

        denoising_means: NestedKey = "denoising_means"
        denoising_stds: NestedKey = "denoising_stds"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(self, actor_network: TruDiActor, critic_network: TensorDictModule | None = None, **kwargs: Any):
        super().__init__(actor_network, critic_network, **kwargs)
        self.set_keys(denoising_means=actor_network.means_key, denoising_stds=actor_network.stds_key)

    def _set_in_keys(self) -> None:
        super()._set_in_keys()
        self._in_keys = sorted(
            {*self._in_keys, self.tensor_keys.denoising_means, self.tensor_keys.denoising_stds}, key=str
        )

    def rollout_chain(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, ...]:
        """The stored chain [*B, K+1, d], its log-likelihood [*B] and the rollout's step means and stds [*B, K, d]."""
        keys = self.tensor_keys
        stored = tuple(
            tensordict.get(key)
            for key in (keys.action, keys.sample_log_prob, keys.denoising_means, keys.denoising_stds)
        )
        if any(tensor.requires_grad for tensor in stored):
            raise RuntimeError("the stored chain, log-prob, means and stds must not require grad")
        self.numerics.require_finite(stored[2], "stored rollout means", tensordict, keys.action)
        return stored
