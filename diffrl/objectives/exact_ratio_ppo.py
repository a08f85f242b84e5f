"""What GenPO's and TruDi's losses share around their policy terms."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.objectives import ClipPPOLoss


class ExactRatioPPOLoss(ClipPPOLoss):
    """Base of the clipped-PPO losses whose ratio is an exact likelihood ratio of a generative policy.

    Subclasses write the policy terms of ``forward`` and list their outputs in
    :meth:`_policy_out_keys`; this class fetches (or computes) and normalizes the advantage,
    and adds the entropy bonus and the clipped value loss with its diagnostics, so every such
    loss reports the same ``loss_entropy``, ``loss_critic``, ``explained_variance`` and
    ``value_clip_fraction`` as TorchRL's ``ClipPPOLoss``.
    """

    def _policy_out_keys(self) -> list[str]:
        raise NotImplementedError

    @property
    def out_keys(self) -> list[str]:
        keys = self._policy_out_keys()
        if float(self.entropy_coeff) > 0:
            keys.append("loss_entropy")
        if self._has_critic:
            keys += ["loss_critic", "explained_variance"]
            if self.clip_value is not None:
                keys.append("value_clip_fraction")
        return keys

    @out_keys.setter
    def out_keys(self, values: list[str]) -> None:
        self._out_keys = values

    def _advantage(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The advantage [*B, 1]: stored, or computed by the value estimator; normalized if asked."""
        advantage = tensordict.get(self.tensor_keys.advantage, None)
        if advantage is None:
            self.value_estimator(tensordict)
            advantage = tensordict.get(self.tensor_keys.advantage)
        return self._maybe_normalize_advantage(advantage, tensordict, update_norm=True)

    def _add_entropy_and_critic(
        self, out: TensorDictBase, entropy: torch.Tensor, tensordict: TensorDictBase
    ) -> TensorDictBase:
        if float(self.entropy_coeff) > 0:
            out["loss_entropy"] = -self.entropy_coeff * entropy
        if self._has_critic:
            loss_critic, value_clip_fraction, explained_variance = self.loss_critic(tensordict)
            out["loss_critic"] = loss_critic.mean()
            out["explained_variance"] = explained_variance.mean()
            if value_clip_fraction is not None:
                out["value_clip_fraction"] = value_clip_fraction
        return out
