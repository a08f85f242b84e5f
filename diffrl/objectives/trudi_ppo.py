r"""TruDi-PPO, diffrl's likelihood-ratio variant of TruDi: PPO on a denoising chain projected onto a whole-trajectory
KL trust region. Our own derivation, not the TruDi authors' algorithm (that is :mod:`diffrl.objectives.trudi`).

Symbols: B the batch shape, K the number of denoising steps, d the action dimension.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule

from diffrl.modules.denoising_chain import gaussian_chain_log_prob
from diffrl.modules.trudi_actor import TruDiActor
from diffrl.objectives.denoising_chain_ppo import DenoisingChainPPOLoss
from diffrl.objectives.estimators import effective_sample_size, kl_k1, kl_k3, max_ratio
from diffrl.objectives.trust_region import diagonal_gaussian_kl, project_gaussian, project_mean


class TruDiPPOLoss(DenoisingChainPPOLoss):
    r"""PPO with the exact chain likelihood of a *projected* denoising policy, plus a trust-region regression.

    Per state s, the network's K step Gaussians π_θ,k = N(μ_θ(x_k, k, s), σ_k²) — evaluated at the
    chain stored at rollout — are projected onto the ball Σ_k KL(π̃_k ‖ π_old,k) ≤ ε around the
    rollout policy's Gaussians (stored by the actor), giving π̃
    (:mod:`diffrl.objectives.trust_region`: a closed-form joint rescaling of the mean steps for
    fixed stds, a batched 1-D dual with implicit gradients for learned stds). The loss is

    .. math::

        L = -E\big[\min(r A, \mathrm{clip}(r, 1-ε_c, 1+ε_c) A)\big]
            + α\,E_s\Big[\sum_k \mathrm{KL}(π_{θ,k} \,\|\, \mathrm{sg}(\tilde π_k))\Big]
            + c_v L^V - c_H H

    with r = p̃(x_{0:K}|s)/p_old(x_{0:K}|s), the ratio of the stored chain's exact likelihood
    under the projected policy and at rollout. The surrogate's gradient flows through the
    projection; the regression term (Otto et al., arXiv 2101.09207) pulls the network itself
    toward its projection, since the actor samples from the unprojected network. Inside the
    trust region π̃ = π_θ and the regression term is zero.

    Outputs (all scalars): ``loss_objective``, ``loss_trust_region``, ``loss_critic`` and, when
    ``entropy_coeff > 0``, ``loss_entropy``; diagnostics ``kl_approx`` (k1 estimate of
    KL(p_old ‖ p̃) on the stored chains, what the adaptive learning rate reads), ``kl_k3``,
    ``chain_kl`` (mean over states of Σ_k KL(π_θ,k ‖ π_old,k) before projection),
    ``chain_kl_projected`` (the same after projection, ≤ ε at every state),
    ``step_kl_<k>`` for k = 1..K (the per-step share of ``chain_kl``), ``projected_fraction``
    (states outside the trust region), ``clip_fraction``, ``ESS``, ``max_ratio``, ``entropy``
    (the exact entropy of the network's chain H(x_{0:K}|s), not of the action alone),
    ``denoised_clip_fraction`` (entries of x̂_0 clipped by the actor's ``denoised_clip``),
    ``explained_variance`` and ``value_clip_fraction``. Keys are set the TorchRL way
    (:meth:`set_keys`), defaulting to the actor's.

    The method is TruDi (Trust-Region Diffusion Policies, ICML 2026, arXiv 2606.15260); no
    public code is known, and this is our derivation from the paper's abstract, DPPO's Gaussian
    denoising chain (arXiv 2409.00588) and Otto et al.'s trust-region projection layers
    (arXiv 2101.09207). See docs/trudi.md.

    Args:
        actor_network: the :class:`~diffrl.modules.trudi_actor.TruDiActor`.
        critic_network: a value module writing ``"state_value"`` [*B, 1].
        trust_region_kl: ε, the whole-trajectory KL budget per state.
        regression_coeff: α, the weight of the trust-region regression loss.
        clip_epsilon: PPO's ratio clip ε_c; ``None`` uses the unclipped importance-weighted
            surrogate, the projection alone bounding the update (as in Otto et al.).
        critic_coeff: value-loss weight.
        clip_value: value clip around the rollout's value (``None`` disables).
        loss_critic_type: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.
        entropy_coeff: c_H on the exact chain entropy (it has a gradient only with a learned std).
        normalize_advantage: standardize advantages per minibatch (the training loop
            normalizes over the whole rollout instead).
        max_abs_log_ratio, max_outlier_fraction: a sample whose |log-ratio| exceeds the first is
            left out of the surrogate and counted in ``ratio_outlier_fraction``; more such samples
            than the second fraction, or a non-finite log-ratio, raise a ``NumericalError``
            (see :class:`~diffrl.objectives.exact_ratio_ppo.ExactRatioPPOLoss`).
        projection_iterations: bisection steps of the learned-std projection.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.modules import MLP, ValueOperator
        >>> from diffrl.modules import DenoisingChain
        >>> actor = TruDiActor(DenoisingChain(action_dim=2, obs_dim=3, num_steps=4, hidden_sizes=[16]))
        >>> critic = ValueOperator(MLP(in_features=3, out_features=1, num_cells=[16]), in_keys=["observation"])
        >>> loss = TruDiPPOLoss(actor, critic, trust_region_kl=0.05)
        >>> batch = actor(TensorDict({"observation": torch.randn(8, 3)}, batch_size=[8]))
        >>> batch["advantage"], batch["value_target"] = torch.randn(8, 1), torch.randn(8, 1)
        >>> batch["state_value"] = torch.zeros(8, 1)
        >>> out = loss(batch)
        >>> abs(float(out["kl_approx"])) < 1e-5, float(out["projected_fraction"])  # θ = θ_old
        (True, 0.0)
    """

    def __init__(
        self,
        actor_network: TruDiActor,
        critic_network: TensorDictModule | None = None,
        *,
        trust_region_kl: float = 0.05,
        regression_coeff: float = 1.0,
        clip_epsilon: float | None = 0.2,
        critic_coeff: float = 1.0,
        clip_value: float | None = 0.2,
        loss_critic_type: str = "l2",
        entropy_coeff: float = 0.0,
        normalize_advantage: bool = False,
        max_abs_log_ratio: float = 20.0,
        max_outlier_fraction: float = 0.05,
        projection_iterations: int = 64,
    ) -> None:
        if trust_region_kl <= 0:
            raise ValueError(f"trust_region_kl must be > 0, got {trust_region_kl}")
        if regression_coeff < 0:
            raise ValueError(f"regression_coeff must be >= 0, got {regression_coeff}")
        super().__init__(
            actor_network,
            critic_network,
            # An infinite clip never binds; the surrogate below then skips clipping altogether.
            clip_epsilon=math.inf if clip_epsilon is None else clip_epsilon,
            critic_coeff=critic_coeff,
            clip_value=clip_value,
            loss_critic_type=loss_critic_type,
            entropy_coeff=entropy_coeff,
            normalize_advantage=normalize_advantage,
            max_abs_log_ratio=max_abs_log_ratio,
            max_outlier_fraction=max_outlier_fraction,
        )
        self.clip_ratio = clip_epsilon is not None
        self.trust_region_kl = trust_region_kl
        self.register_coeff_buffer("regression_coeff", regression_coeff, device=None)
        self.projection_iterations = projection_iterations

    def _policy_out_keys(self) -> list[str]:
        keys = ["loss_objective", "loss_trust_region", "kl_approx", "kl_k3", "chain_kl", "chain_kl_projected"]
        keys += [f"step_kl_{k}" for k in range(1, self.actor_network.num_steps + 1)]
        keys += ["projected_fraction", "clip_fraction", "ratio_outlier_fraction", "ESS", "max_ratio", "entropy"]
        keys.append("denoised_clip_fraction")
        return keys

    def project(
        self, mean: torch.Tensor, std: torch.Tensor, old_mean: torch.Tensor, old_std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """π̃: the network's step Gaussians [*B, K, d] projected onto the trajectory-KL ball around the old ones."""
        if self.actor_network.learn_std:
            return project_gaussian(mean, std, old_mean, old_std, self.trust_region_kl, self.projection_iterations)
        # Fixed stds are the schedule's at rollout and now: only the means move.
        return project_mean(mean, old_mean, std, self.trust_region_kl), std.expand_as(mean)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = tensordict.clone(False)
        advantage = self._advantage(tensordict)

        chain_key = self.tensor_keys.action
        chain, old_log_prob, old_mean, old_std = self.rollout_chain(tensordict)

        dist = self.actor_network.get_dist(tensordict)
        step_means = dist.step_means(chain)
        mean, std = step_means.mean, dist.stds
        self.numerics.require_finite(mean, "TruDi per-step means μ_θ(x_k, k, s)", tensordict, chain_key)
        projected_mean, projected_std = self.project(mean, std, old_mean, old_std)

        # log p̃ − log p_old of the stored chain.
        log_weight = self._log_ratio(gaussian_chain_log_prob(chain, projected_mean, projected_std), old_log_prob)
        surrogate, clip_fraction, outlier, outlier_fraction = self._surrogate(
            log_weight, advantage, tensordict, "TruDi log-ratio log p̃ − log p_old", clip=self.clip_ratio
        )
        log_ratio, keep = log_weight.detach(), ~outlier  # the KL and ESS estimates of the samples in use

        regression_kl = diagonal_gaussian_kl(mean, std, projected_mean.detach(), projected_std.detach()).sum(-1)
        with torch.no_grad():
            step_kl = diagonal_gaussian_kl(mean, std, old_mean, old_std)  # [*B, K]
            chain_kl = step_kl.sum(-1)
            projected_kl = diagonal_gaussian_kl(projected_mean, projected_std, old_mean, old_std).sum(-1)
        entropy = dist.entropy().mean()

        out = TensorDict(
            {
                "loss_objective": -surrogate.mean(),
                "loss_trust_region": self.regression_coeff * regression_kl.mean(),
                "kl_approx": kl_k1(log_ratio, keep),
                "kl_k3": kl_k3(log_ratio, keep),
                "chain_kl": chain_kl.mean(),
                "chain_kl_projected": projected_kl.mean(),
                "projected_fraction": (chain_kl > self.trust_region_kl).float().mean(),
                "clip_fraction": clip_fraction,
                "ratio_outlier_fraction": outlier_fraction,
                "ESS": effective_sample_size(log_ratio, keep),
                "max_ratio": max_ratio(log_ratio, keep),
                "entropy": entropy.detach(),
                "denoised_clip_fraction": step_means.clipped.float().mean(),
            }
        )
        per_step = step_kl.reshape(-1, step_kl.shape[-1]).mean(0)
        for row, value in enumerate(per_step):  # row i is the denoising step k = K − i
            out[f"step_kl_{self.actor_network.num_steps - row}"] = value
        return self._add_entropy_and_critic(out, entropy, tensordict)
