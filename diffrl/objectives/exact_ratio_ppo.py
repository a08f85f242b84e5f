"""The exact likelihood-ratio surrogate that GenPO, TruDi-PPO and DPPO share."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase

from diffrl.objectives.generative_ppo import GenerativePPOLoss
from diffrl.torchrl_compat import ppo_clip_bounds


class ExactRatioPPOLoss(GenerativePPOLoss):
    """Base of the clipped-PPO losses whose ratio is an exact likelihood ratio of a generative policy.

    On top of :class:`~diffrl.objectives.generative_ppo.GenerativePPOLoss` (shared arguments, output
    keys, advantage, entropy and critic terms) it forms the exact log-ratio against the stored
    log-probability (:meth:`_log_ratio`) and the clipped surrogate with its outlier safeguard
    (:meth:`_surrogate`).

    The outlier safeguard: an exact likelihood of a sharply peaked generative policy can move by
    tens of nats on a single stored sample after one step (seen with GenPO on Isaac-Cartpole after
    convergence: one log-ratio of 89 among 1024 while the KL was 0.014). e^89 overflows float32
    and, with a negative advantage, PPO's unclipped term would send an infinite gradient. Such a
    sample is far outside any trust region: it is left out of the surrogate (zero gradient, as
    clipping does on the other side) and counted in ``ratio_outlier_fraction``. More than
    ``max_outlier_fraction`` of them, or any non-finite log-ratio, is a
    :class:`~diffrl.numerics.NumericalError` raised through :attr:`numerics` (at once by default;
    once per iteration in the trainer).

    Args:
        actor_network: the generative actor.
        critic_network: a value module writing ``"state_value"`` [*B, 1] (``None``: no critic loss).
        clip_epsilon, critic_coeff, clip_value, loss_critic_type, entropy_coeff, normalize_advantage:
            as :class:`~diffrl.objectives.generative_ppo.GenerativePPOLoss`.
        max_abs_log_ratio, max_outlier_fraction: the outlier safeguard above.
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
        max_abs_log_ratio: float = 20.0,
        max_outlier_fraction: float = 0.05,
    ) -> None:
        if not max_abs_log_ratio > 0 or not 0 <= max_outlier_fraction <= 1:
            raise ValueError(
                f"need max_abs_log_ratio > 0 and 0 <= max_outlier_fraction <= 1, got "
                f"{max_abs_log_ratio=}, {max_outlier_fraction=}"
            )
        super().__init__(
            actor_network,
            critic_network,
            clip_epsilon=clip_epsilon,
            critic_coeff=critic_coeff,
            clip_value=clip_value,
            loss_critic_type=loss_critic_type,
            entropy_coeff=entropy_coeff,
            normalize_advantage=normalize_advantage,
        )
        self.max_abs_log_ratio = max_abs_log_ratio
        self.max_outlier_fraction = max_outlier_fraction

    def _log_ratio(self, log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
        """log π_θ − log π_old as [*B, 1]; a stored log-probability of another shape is an error, not a broadcast."""
        if old_log_prob.shape != log_prob.shape:
            raise ValueError(
                f"the stored log-probability {self.tensor_keys.sample_log_prob!r} has shape "
                f"{tuple(old_log_prob.shape)} but the policy's is {tuple(log_prob.shape)}: store it as the actor "
                "writes it, [*B]"
            )
        return (log_prob - old_log_prob).unsqueeze(-1)

    def _surrogate(
        self,
        log_weight: torch.Tensor,
        advantage: torch.Tensor,
        tensordict: TensorDictBase,
        what: str,
        clip: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """PPO's surrogate min(r A, clip(r) A) per sample [*B, 1], outliers left out.

        Returns the surrogate, the clip fraction, the outlier mask [*B, 1] and the outlier fraction.
        """
        self._require_advantage_shape(advantage, log_weight)
        self.numerics.require_finite(log_weight, what, tensordict, self.tensor_keys.action)
        magnitude = log_weight.detach().abs()
        outlier = magnitude > self.max_abs_log_ratio
        outlier_fraction = outlier.float().mean()
        self.numerics.require(
            outlier_fraction > self.max_outlier_fraction,
            what,
            torch.stack([outlier_fraction, magnitude.max()]),
            self._outlier_message,
        )
        safe_log_weight = log_weight.masked_fill(outlier, 0.0)
        surrogate = safe_log_weight.exp() * advantage
        clip_fraction = torch.zeros((), device=log_weight.device)
        if clip:
            clipped = safe_log_weight.clamp(*ppo_clip_bounds(self))
            surrogate = surrogate.minimum(clipped.exp() * advantage)
            clip_fraction = (clipped != safe_log_weight).float().mean()
        return surrogate.masked_fill(outlier, 0.0), clip_fraction, outlier, outlier_fraction

    def _outlier_message(self, values: list[float]) -> str:
        fraction, largest = values
        return (
            f"{fraction:.1%} of the samples have |log-ratio| > max_abs_log_ratio={self.max_abs_log_ratio} "
            f"(largest {largest:.3g}; allowed max_outlier_fraction={self.max_outlier_fraction}): the policy "
            "moved far from the one that collected the data, or the stored data do not belong to it; lower the "
            "learning rate or the target KL"
        )
