"""What GenPO's and TruDi's losses share around their policy terms."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.objectives import ClipPPOLoss

from diffrl.objectives.numerics import NumericalError, require_finite


class ExactRatioPPOLoss(ClipPPOLoss):
    """Base of the clipped-PPO losses whose ratio is an exact likelihood ratio of a generative policy.

    Subclasses write the policy terms of ``forward`` and list their outputs in
    :meth:`_policy_out_keys`; this class fetches (or computes) and normalizes the advantage,
    computes the clipped surrogate with its outlier safeguard (:meth:`_surrogate`), and adds
    the entropy bonus and the clipped value loss with its diagnostics, so every such loss
    reports the same ``loss_entropy``, ``loss_critic``, ``explained_variance`` and
    ``value_clip_fraction`` as TorchRL's ``ClipPPOLoss``.

    Subclasses set ``max_abs_log_ratio`` and ``max_outlier_fraction`` (their constructor
    arguments): an exact likelihood of a sharply peaked generative policy can move by tens of
    nats on a single stored sample after one step (seen with GenPO on Isaac-Cartpole after
    convergence: one log-ratio of 89 among 1024 while the KL was 0.014). e^89 overflows float32
    and, with a negative advantage, PPO's unclipped term would send an infinite gradient. Such a
    sample is far outside any trust region: it is left out of the surrogate (zero gradient, as
    clipping does on the other side) and counted in ``ratio_outlier_fraction``. More than
    ``max_outlier_fraction`` of them, or any non-finite log-ratio, is a :class:`NumericalError`.
    """

    max_abs_log_ratio: float
    max_outlier_fraction: float

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
        require_finite(log_weight, what, tensordict, self.tensor_keys.action)
        outlier = log_weight.detach().abs() > self.max_abs_log_ratio
        outlier_fraction = outlier.float().mean()
        if outlier_fraction > self.max_outlier_fraction:
            raise NumericalError(
                f"{what}: {float(outlier_fraction):.1%} of the samples have |log-ratio| > max_abs_log_ratio="
                f"{self.max_abs_log_ratio} (largest {float(log_weight.detach().abs().max()):.3g}; allowed "
                f"max_outlier_fraction={self.max_outlier_fraction}): the policy moved far from the one that "
                "collected the data, or the stored data do not belong to it; lower the learning rate or the target KL"
            )
        safe_log_weight = log_weight.masked_fill(outlier, 0.0)
        surrogate = safe_log_weight.exp() * advantage
        clip_fraction = torch.zeros((), device=log_weight.device)
        if clip:
            clipped = safe_log_weight.clamp(*self._clip_bounds)
            surrogate = surrogate.minimum(clipped.exp() * advantage)
            clip_fraction = (clipped != safe_log_weight).float().mean()
        return surrogate.masked_fill(outlier, 0.0), clip_fraction, outlier, outlier_fraction

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
