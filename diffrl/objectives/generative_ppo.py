"""What every PPO-family loss of a generative policy shares around its policy terms (GenPO, TruDi-PPO, DPPO, FPO++)."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from torchrl.objectives import ClipPPOLoss

from diffrl.numerics import NumericsMonitor
from diffrl.torchrl_compat import ppo_clip_value_as_float, ppo_has_critic, ppo_normalized_advantage


class GenerativePPOLoss(ClipPPOLoss):
    """Base of the clipped-PPO-family losses of generative actors.

    It owns the constructor arguments these losses share and the output keys every one of them
    reports; subclasses write the policy terms of ``forward`` and list their own outputs in
    :meth:`_policy_out_keys`. This class fetches (or computes) and normalizes the advantage, checks
    its shape, and adds the entropy bonus and the clipped value loss with its diagnostics, so every
    such loss reports the same ``loss_entropy``, ``loss_critic``, ``explained_variance`` and
    ``value_clip_fraction`` as TorchRL's ``ClipPPOLoss``. ``out_keys`` can be set, and the output
    narrowed with ``select_out_keys`` for calls on whole rollouts (the hook asks for every key in
    ``in_keys``, the next step's among them), as on any TorchRL loss; the update rules refuse a
    narrowed loss, since they optimize every ``loss_*`` term. Numerical checks go through
    :attr:`numerics` (at once by default; once per iteration in the trainer).

    Args:
        actor_network: the generative actor.
        critic_network: a value module writing ``"state_value"`` [*B, 1] (``None``: no critic loss).
        clip_epsilon: PPO's ratio clip.
        critic_coeff: value-loss weight.
        clip_value: value clip around the rollout's value (``None`` disables); kept as a Python
            float (:func:`~diffrl.torchrl_compat.ppo_clip_value_as_float`).
        loss_critic_type: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.
        entropy_coeff: the entropy bonus weight c_H.
        normalize_advantage: standardize advantages per minibatch (the trainer normalizes over the
            whole rollout instead, as rsl_rl does).
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        critic_network: TensorDictModule | None = None,
        *,
        clip_epsilon: float = 0.2,
        critic_coeff: float = 1.0,
        clip_value: float | None = 0.2,
        loss_critic_type: str = "l2",
        entropy_coeff: float = 0.0,
        normalize_advantage: bool = False,
    ) -> None:
        if entropy_coeff < 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {entropy_coeff}")
        super().__init__(
            actor_network,
            critic_network,
            clip_epsilon=clip_epsilon,
            entropy_bonus=False,  # each loss computes its own entropy estimate
            entropy_coeff=entropy_coeff,
            critic_coeff=critic_coeff if critic_network is not None else None,
            clip_value=clip_value,
            loss_critic_type=loss_critic_type,
            normalize_advantage=normalize_advantage,
            functional=False,
        )
        # Python values: reading TorchRL's buffers in a branch would sync the host.
        self.has_entropy_term = entropy_coeff > 0
        ppo_clip_value_as_float(self)
        self.numerics = NumericsMonitor()

    def _policy_out_keys(self) -> list[str]:
        raise NotImplementedError

    @property
    def out_keys(self) -> list[str]:
        if self._out_keys is not None:
            return self._out_keys
        keys = self._policy_out_keys()
        if self.has_entropy_term:
            keys.append("loss_entropy")
        if ppo_has_critic(self):
            keys += ["loss_critic", "explained_variance"]
            if self.clip_value is not None:
                keys.append("value_clip_fraction")
        return keys

    @out_keys.setter
    def out_keys(self, values: list[str] | None) -> None:
        self._out_keys = None if values is None else list(values)

    @staticmethod
    def _require_advantage_shape(advantage: torch.Tensor, log_weight: torch.Tensor) -> None:
        """The advantage is [*B, 1] like the log-ratio ([*B] would broadcast; TorchRL's ClipPPOLoss rejects it too)."""
        if advantage.shape != log_weight.shape:
            raise ValueError(
                f"advantage has shape {tuple(advantage.shape)} but the log-ratio {tuple(log_weight.shape)}: "
                "store the advantage as [*B, 1], as TorchRL's GAE writes it"
            )

    def _advantage(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The advantage [*B, 1]: stored, or computed by the value estimator; normalized if asked."""
        advantage = tensordict.get(self.tensor_keys.advantage, None)
        if advantage is None:
            self.value_estimator(tensordict)
            advantage = tensordict.get(self.tensor_keys.advantage)
        return ppo_normalized_advantage(self, advantage, tensordict)

    def _add_entropy_and_critic(
        self, out: TensorDictBase, entropy: torch.Tensor | None, tensordict: TensorDictBase
    ) -> TensorDictBase:
        """Adds ``loss_entropy`` (``entropy`` may be ``None`` when ``entropy_coeff`` is 0) and the critic terms."""
        if self.has_entropy_term:
            out["loss_entropy"] = -self.entropy_coeff * entropy
        if ppo_has_critic(self):
            loss_critic, value_clip_fraction, explained_variance = self.loss_critic(tensordict)
            out["loss_critic"] = loss_critic.mean()
            out["explained_variance"] = explained_variance.mean()
            if value_clip_fraction is not None:
                out["value_clip_fraction"] = value_clip_fraction
        return out
