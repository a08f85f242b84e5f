"""TruDi as its authors built it: REPPO's pathwise trust-region loss with DIME's diffusion actor (arXiv 2606.15260).

The authors' code (vendored with bit-parity tests by GitHub ``karamdaaboul/safe_rl`` at 9925f88, their
branch ``cleanup_reppo_dime``) is REPPO (arXiv 2507.11019) with the Gaussian actor replaced by
DIME's controlled Langevin SDE (arXiv 2502.02316): no advantage and no likelihood ratio, the
actor's gradient is the pathwise derivative of Q(s, a) through the whole sampled chain, gated per
state by the KL between the old and new *paths*. diffrl's earlier likelihood-ratio method is
:class:`~diffrl.objectives.trudi_ppo.TruDiPPOLoss`.
"""

from __future__ import annotations

from diffrl.modules.dime_actor import DIMEActor
from diffrl.modules.hl_gauss_q_value import HLGaussQValue
from diffrl.objectives.pathwise import Gate, PathwiseTrustRegionLoss


class TruDiLoss(PathwiseTrustRegionLoss):
    """TruDi's loss: the pathwise trust-region loss (:class:`~diffrl.objectives.pathwise.PathwiseTrustRegionLoss`)
    over a :class:`~diffrl.modules.DIMEActor`.

    With the DIME actor, log π in the actor term and in the soft return is DIME's pseudo
    log-probability (a bound, :class:`~diffrl.modules.DIMEActor`), the entropy estimate Ĥ is the
    authors' (without the prior term) and c(s) is the path KL from ``num_kl_samples`` chains run
    under the old kernel. Defaults are the authors': ε = 0.1, H* = −4 per action dimension (on
    their estimate's scale), α₀ = λ₀ = 0.01, the per-state gate.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from diffrl.modules import DIMEActor, HLGaussQValue
        >>> actor = DIMEActor(action_dim=2, obs_dim=3, num_steps=4, hidden_sizes=[16])
        >>> critic = HLGaussQValue(obs_dim=3, action_dim=2, hidden_sizes=[16], num_bins=21)
        >>> loss = TruDiLoss(actor, critic)
        >>> batch = TensorDict({"observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...                     "value_target": torch.randn(8)}, batch_size=[8])
        >>> out = loss(batch)
        >>> float(out["path_kl"]) < 1e-10, float(out["trust_region_fraction"])
        (True, 0.0)
    """

    default_target_entropy_per_dim = -4.0

    def __init__(
        self,
        actor_network: DIMEActor,
        critic_network: HLGaussQValue,
        *,
        trust_region_kl: float = 0.1,
        target_entropy_per_dim: float | None = None,
        init_alpha: float = 0.01,
        init_lagrange_multiplier: float = 0.01,
        gate: Gate = "clipped",
        aux_loss_coeff: float = 0.0,
    ) -> None:
        if not isinstance(actor_network, DIMEActor):
            raise TypeError(
                f"TruDiLoss needs a DIMEActor (REPPOLoss takes other actors), got {type(actor_network).__name__}"
            )
        super().__init__(
            actor_network,
            critic_network,
            trust_region_kl=trust_region_kl,
            target_entropy_per_dim=target_entropy_per_dim,
            init_alpha=init_alpha,
            init_lagrange_multiplier=init_lagrange_multiplier,
            gate=gate,
            aux_loss_coeff=aux_loss_coeff,
        )
