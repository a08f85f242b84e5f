r"""FPO++: PPO-style training of a flow policy from CFM-loss differences (Yi et al., arXiv 2602.02481).

Builds on FPO (McAllister et al., arXiv 2507.21053); the trust region for negative advantages is
SPO's quadratic penalty (Simple Policy Optimization, Xie et al., arXiv 2401.16025). Facts read from the authors' code
(``amazon-far/fpo-control``, mirrored as ``RPFey/fpo-control`` @cd38cea); the code here is diffrl's.

Symbols: B the batch shape, M the number of (ε, t) pairs per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey

from diffrl.modules.fpo_actor import FPOActor
from diffrl.objectives.generative_ppo import GenerativePPOLoss

TrustRegion = Literal["aspo", "ppo", "spo"]


def clamp_straight_through(x: torch.Tensor, max: float) -> torch.Tensor:
    """min(x, max) in the forward pass, with the identity's gradient (a straight-through estimator)."""
    return x + (x.clamp(max=max) - x).detach()


def trust_region_objective(
    ratio: torch.Tensor, advantage: torch.Tensor, epsilon: float, mode: TrustRegion
) -> torch.Tensor:
    r"""The per-pair objective to *maximize* (the loss is its negative mean).

    - ``"ppo"``: min(ρA, clip(ρ, 1 − ε, 1 + ε)A);
    - ``"spo"``: ρA − |A|/(2ε)·(ρ − 1)² (SPO's penalty, smooth in ρ);
    - ``"aspo"`` (FPO++): PPO's clip where A > 0, SPO's penalty where A ≤ 0.

    Example:
        >>> ratio, advantage = torch.tensor([1.5, 1.5]), torch.tensor([2.0, -2.0])
        >>> trust_region_objective(ratio, advantage, 0.25, "aspo").tolist()  # [1.25 * 2, -1.5 * 2 - 2 / 0.5 * 0.5**2]
        [2.5, -4.0]
    """
    clipped = torch.minimum(ratio * advantage, ratio.clamp(1 - epsilon, 1 + epsilon) * advantage)
    if mode == "ppo":
        return clipped
    penalized = ratio * advantage - advantage.abs() / (2 * epsilon) * (ratio - 1).square()
    if mode == "spo":
        return penalized
    return torch.where(advantage > 0, clipped, penalized)


class FPOPlusPlusLoss(GenerativePPOLoss):
    r"""FPO++'s surrogate: one ratio per stored (ε, t) pair, from the change of its CFM loss.

    For a stored sample (s, a) with pairs (ε_i, t_i), i = 1..M, and their rollout CFM losses ℓ_old,i
    (:class:`~diffrl.modules.fpo_actor.FPOActor`), the loss recomputes ℓ_θ,i on the same pairs and forms

    .. math::

        ρ_i = \exp\big(\mathrm{clampSTE}(\bar ℓ_{old,i} − \bar ℓ_{θ,i},\ \max = c_ρ)\big),\qquad
        \bar ℓ = \min(ℓ, c_ℓ)

    (clampSTE: the clamped value forward, the identity's gradient backward; where A < 0 the new loss
    is also clamped at ``negative_advantage_cfm_loss_clamp``), then

    .. math::

        L = −\frac{1}{BM}\sum_{b,i} f(ρ_{b,i}, A_b) + c_v L^V

    with f the trust region of :func:`trust_region_objective` (ASPO by default: PPO-clip for A > 0,
    SPO's penalty for A ≤ 0, ε = 0.05). Where ℓ is clamped its gradient is zero (``torch.clamp``, as
    the authors' code has it). At θ = θ_old every ratio is exactly 1: ℓ_θ and ℓ_old are the same
    function of the same inputs.

    FPO's reading: ℓ_old − ℓ_θ estimates log π_θ(a|s) − log π_old(a|s) up to the ELBO gap (arXiv
    2507.21053). It is a surrogate, not a likelihood ratio: diffrl reports no KL or entropy for FPO++
    (the trainer's KL-adaptive learning rate needs ``kl_approx`` and so is off: FPO++'s schedule is
    fixed). The diagnostics say what the ratios do.

    Outputs (scalars): ``loss_objective``, ``loss_critic``; diagnostics ``clip_fraction`` (the share of
    pairs with ρ outside [1 − ε, 1 + ε]), ``ratio_cap_fraction`` (the share at the straight-through cap
    c_ρ), ``cfm_loss`` (the mean recomputed ℓ_θ), ``cfm_loss_clamp_fraction`` (the share of ℓ_θ or ℓ_old
    above c_ℓ), ``mean_log_ratio`` (the mean clamped ℓ_old − ℓ_θ), ``mean_ratio_deviation`` (mean |ρ − 1|),
    ``max_ratio``, ``explained_variance`` and, with a value clip, ``value_clip_fraction``.

    What differs from the reference: no kNN entropy bonus (its default weight is 0), no advantage clamp
    (±100 on standardized advantages; never reached in practice), and the reference's "KL" proxy
    (the mean squared change of the predicted x_1, used only by its optional adaptive schedule) is not
    computed.

    Args:
        actor_network: the :class:`~diffrl.modules.fpo_actor.FPOActor`.
        critic_network: a value module writing ``"state_value"`` [*B, 1].
        clip_epsilon: ε of the trust region (FPO++: 0.05).
        trust_region: ``"aspo"`` (FPO++), ``"ppo"`` or ``"spo"``.
        max_log_ratio: c_ρ, the straight-through cap of ℓ_old − ℓ_θ (FPO++: 10).
        cfm_loss_clamp: c_ℓ, the clamp of both CFM losses (FPO++: 20; ``None`` disables).
        negative_advantage_cfm_loss_clamp: the clamp of ℓ_θ where A < 0 (FPO++: 20; ``None`` disables).
        critic_coeff: value-loss weight (FPO++: 1.0).
        clip_value: value clip (FPO++: none).
        loss_critic_type, normalize_advantage: as
            :class:`~diffrl.objectives.generative_ppo.GenerativePPOLoss`.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.modules import MLP, ValueOperator
        >>> from diffrl.modules import CFMFlow
        >>> actor = FPOActor(CFMFlow(action_dim=2, obs_dim=3, hidden_sizes=[16], num_steps=4), num_cfm_pairs=8)
        >>> critic = ValueOperator(MLP(in_features=3, out_features=1, num_cells=[16]), in_keys=["observation"])
        >>> loss = FPOPlusPlusLoss(actor, critic)
        >>> batch = actor(TensorDict({"observation": torch.randn(6, 3)}, batch_size=[6]))
        >>> batch["advantage"], batch["value_target"] = torch.randn(6, 1), torch.randn(6, 1)
        >>> out = loss(batch)
        >>> float(out["mean_ratio_deviation"]), float(out["clip_fraction"])  # θ = θ_old: every ratio is 1
        (0.0, 0.0)
    """

    @dataclass
    class _AcceptedKeys(GenerativePPOLoss._AcceptedKeys):
        """Adds the stored pairs (ε [*B, M, d], t [*B, M]) and their rollout CFM losses [*B, M] to PPO's keys."""

        cfm_noise: NestedKey = "cfm_noise"
        cfm_time: NestedKey = "cfm_time"
        cfm_loss: NestedKey = "cfm_loss"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        actor_network: FPOActor,
        critic_network: TensorDictModule | None = None,
        *,
        clip_epsilon: float = 0.05,
        trust_region: TrustRegion = "aspo",
        max_log_ratio: float = 10.0,
        cfm_loss_clamp: float | None = 20.0,
        negative_advantage_cfm_loss_clamp: float | None = 20.0,
        critic_coeff: float = 1.0,
        clip_value: float | None = None,
        loss_critic_type: str = "l2",
        normalize_advantage: bool = False,
    ) -> None:
        if trust_region not in ("aspo", "ppo", "spo"):
            raise ValueError(f"trust_region must be 'aspo', 'ppo' or 'spo', got {trust_region!r}")
        if not clip_epsilon > 0 or not max_log_ratio > 0:
            raise ValueError(f"need clip_epsilon > 0 and max_log_ratio > 0, got {clip_epsilon=}, {max_log_ratio=}")
        clamps = {
            "cfm_loss_clamp": cfm_loss_clamp,
            "negative_advantage_cfm_loss_clamp": negative_advantage_cfm_loss_clamp,
        }
        for name, clamp in clamps.items():
            if clamp is not None and not clamp > 0:
                raise ValueError(f"{name} must be > 0 or None, got {clamp}")
        super().__init__(
            actor_network,
            critic_network,
            clip_epsilon=clip_epsilon,
            critic_coeff=critic_coeff,
            clip_value=clip_value,
            loss_critic_type=loss_critic_type,
            normalize_advantage=normalize_advantage,
        )
        self.set_keys(
            action=actor_network.action_key,
            cfm_noise=actor_network.cfm_noise_key,
            cfm_time=actor_network.cfm_time_key,
            cfm_loss=actor_network.cfm_loss_key,
        )
        self.epsilon = clip_epsilon
        self.trust_region = trust_region
        self.max_log_ratio = max_log_ratio
        self.cfm_loss_clamp = cfm_loss_clamp
        self.negative_advantage_cfm_loss_clamp = negative_advantage_cfm_loss_clamp

    def _set_in_keys(self) -> None:
        super()._set_in_keys()
        keys = self.tensor_keys
        self._in_keys = sorted({*self._in_keys, keys.cfm_noise, keys.cfm_time, keys.cfm_loss}, key=str)

    def _policy_out_keys(self) -> list[str]:
        return [
            "loss_objective",
            "clip_fraction",
            "ratio_cap_fraction",
            "cfm_loss",
            "cfm_loss_clamp_fraction",
            "mean_log_ratio",
            "mean_ratio_deviation",
            "max_ratio",
        ]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = tensordict.clone(False)
        advantage = self._advantage(tensordict)
        keys = self.tensor_keys
        old = tensordict.get(keys.cfm_loss)
        if old.requires_grad:
            raise RuntimeError(f"the stored CFM losses {keys.cfm_loss!r} must not require grad")
        pairs = (tensordict.get(keys.action), tensordict.get(keys.cfm_noise), tensordict.get(keys.cfm_time))
        new = self.actor_network.cfm_loss(tensordict, *pairs)
        if old.shape != new.shape:
            raise ValueError(
                f"the stored CFM losses {keys.cfm_loss!r} have shape {tuple(old.shape)} but the pairs give "
                f"{tuple(new.shape)}: store them as the actor writes them, [*B, M]"
            )
        self._require_advantage_shape(advantage, new[..., :1])
        self.numerics.require_finite(new, "FPO++ CFM loss", tensordict, keys.action)
        recomputed = new.detach()

        clamp = self.cfm_loss_clamp
        clamped = torch.zeros_like(new, dtype=torch.bool)
        if clamp is not None:
            clamped = (recomputed > clamp) | (old > clamp)
            old, new = old.clamp(max=clamp), new.clamp(max=clamp)
        if self.negative_advantage_cfm_loss_clamp is not None:
            new = torch.where(advantage < 0, new.clamp(max=self.negative_advantage_cfm_loss_clamp), new)
        raw_log_ratio = old - new
        log_ratio = clamp_straight_through(raw_log_ratio, self.max_log_ratio)
        ratio = log_ratio.exp()
        objective = trust_region_objective(ratio, advantage, self.epsilon, self.trust_region)

        ratio = ratio.detach()
        out = TensorDict(
            {
                "loss_objective": -objective.mean(),
                "clip_fraction": ((ratio - 1).abs() > self.epsilon).float().mean(),
                "ratio_cap_fraction": (raw_log_ratio.detach() > self.max_log_ratio).float().mean(),
                "cfm_loss": recomputed.mean(),
                "cfm_loss_clamp_fraction": clamped.float().mean(),
                "mean_log_ratio": log_ratio.detach().mean(),
                "mean_ratio_deviation": (ratio - 1).abs().mean(),
                "max_ratio": ratio.max(),
            }
        )
        return self._add_entropy_and_critic(out, None, tensordict)
