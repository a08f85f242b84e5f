"""GenPO's loss: PPO with the exact likelihood of a doubled-action flow (arXiv 2505.18763)."""

from __future__ import annotations

import math

from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule

from diffrl.modules.genpo_actor import GenPOActor
from diffrl.objectives.estimators import effective_sample_size, entropy_estimate, kl_k1, kl_k3, max_ratio
from diffrl.objectives.exact_ratio_ppo import ExactRatioPPOLoss


class GenPOLoss(ExactRatioPPOLoss):
    r"""Clipped PPO on GenPO's exact flow likelihood, with the compression loss.

    The importance ratio is exact: π_θ(ã|s)/π_old(ã|s) with log π_θ from one inversion of
    the flow (no Jacobian) and log π_old stored at rollout. The total loss is

    .. math::

        L = L^{clip}(θ) + c_v L^{V}(φ) + ν\,E_{z}\lVert x_N - y_N\rVert - c_H \hat H

    where the compression term and the entropy estimate Ĥ = −log π_θ use one fresh
    reparameterized sample per state (of the first ``compression_batch_fraction`` of the
    minibatch's states, which the trainer shuffles). The inversion of the stored latents and the
    fresh forward pass run as one stacked flow pass (:meth:`GenPOFlow.inverse_and_forward`: 2N
    velocity calls, not 4N). In the doubled space
    Ĥ's expectation is the constant d(1 + log 2π) + 2·N·d·log p, so the entropy bonus has no
    gradient; it is kept for reporting and for parity with other losses (see docs/genpo.md). With the
    flow's ``learnable_volume`` the expectation gains 2·E_s Σ_j ℓ_j(s), and Ĥ carries its exact
    gradient to the log-scale head.

    Outputs: ``loss_objective``, ``loss_critic``, ``loss_compression`` and, when
    ``entropy_coeff > 0``, ``loss_entropy``; diagnostics ``kl_approx`` (k1 estimate of
    KL(π_old‖π_θ), what GenPO's adaptive learning rate reads), ``kl_k3``, ``clip_fraction``,
    ``ESS``, ``max_ratio``, ``entropy``, ``compression_distance``, ``explained_variance`` and
    ``value_clip_fraction``. Keys are set the TorchRL way (:meth:`set_keys`); the action key
    defaults to the actor's latent key (``"latent_action"``).

    Reference: Ding et al., "GenPO: Generative Diffusion Models Meet On-Policy
    Reinforcement Learning", arXiv 2505.18763; PPO: Schulman et al., arXiv 1707.06347.

    Args:
        actor_network: the :class:`~diffrl.modules.genpo_actor.GenPOActor`.
        critic_network: a value module writing ``"state_value"`` [*B, 1].
        clip_epsilon: PPO's ratio clip (GenPO: 0.2).
        critic_coeff: value-loss weight (GenPO: 1.0).
        clip_value: value clip around the rollout's value (GenPO: 0.2; ``None`` disables).
        loss_critic_type: ``"l2"`` (GenPO), ``"l1"`` or ``"smooth_l1"``.
        compression_coeff: ν, the weight of E‖x_N − y_N‖ (GenPO: 0.01).
        entropy_coeff: c_H (GenPO: 0).
        normalize_advantage: standardize advantages per minibatch (the training loop
            normalizes over the whole rollout instead, as rsl_rl does).
        max_abs_log_ratio, max_outlier_fraction: a sample whose |log-ratio| exceeds the first is
            left out of the surrogate and counted in ``ratio_outlier_fraction``; more such samples
            than the second fraction, or a non-finite log-ratio, raise a ``NumericalError``
            (see :class:`~diffrl.objectives.exact_ratio_ppo.ExactRatioPPOLoss`).
        compression_batch_fraction: the share of the minibatch's states that get a fresh sample for
            the compression and entropy terms (1: all, GenPO's; smaller is cheaper, noisier).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.modules import MLP, ValueOperator
        >>> from diffrl.modules.genpo_actor import GenPOActor
        >>> from diffrl.modules.genpo_flow import GenPOFlow
        >>> actor = GenPOActor(GenPOFlow(action_dim=2, obs_dim=3, hidden_sizes=[16]))
        >>> critic = ValueOperator(MLP(in_features=3, out_features=1, num_cells=[16]), in_keys=["observation"])
        >>> loss = GenPOLoss(actor, critic)
        >>> batch = actor(TensorDict({"observation": torch.randn(8, 3)}, batch_size=[8]))
        >>> batch["advantage"], batch["value_target"] = torch.randn(8, 1), torch.randn(8, 1)
        >>> batch["state_value"] = torch.zeros(8, 1)
        >>> out = loss(batch)
        >>> abs(float(out["kl_approx"])) < 1e-5, float(out["clip_fraction"])  # θ = θ_old: ratio 1 up to round-off
        (True, 0.0)
    """

    def __init__(
        self,
        actor_network: GenPOActor,
        critic_network: TensorDictModule | None = None,
        *,
        clip_epsilon: float = 0.2,
        critic_coeff: float = 1.0,
        clip_value: float | None = 0.2,
        loss_critic_type: str = "l2",
        compression_coeff: float = 0.01,
        entropy_coeff: float = 0.0,
        normalize_advantage: bool = False,
        max_abs_log_ratio: float = 20.0,
        max_outlier_fraction: float = 0.05,
        compression_batch_fraction: float = 1.0,
    ) -> None:
        if compression_coeff < 0:
            raise ValueError(f"compression_coeff must be >= 0, got {compression_coeff}")
        if not 0 < compression_batch_fraction <= 1:
            raise ValueError(f"compression_batch_fraction must lie in (0, 1], got {compression_batch_fraction}")
        super().__init__(
            actor_network,
            critic_network,
            clip_epsilon=clip_epsilon,
            critic_coeff=critic_coeff,
            clip_value=clip_value,
            loss_critic_type=loss_critic_type,
            entropy_coeff=entropy_coeff,
            normalize_advantage=normalize_advantage,
            max_abs_log_ratio=max_abs_log_ratio,
            max_outlier_fraction=max_outlier_fraction,
        )
        self.register_coeff_buffer("compression_coeff", compression_coeff, device=None)
        self.compression_batch_fraction = compression_batch_fraction

    def _policy_out_keys(self) -> list[str]:
        keys = ["loss_objective", "loss_compression", "kl_approx", "kl_k3", "clip_fraction", "ESS", "max_ratio"]
        keys.append("ratio_outlier_fraction")
        keys += ["entropy", "compression_distance"]
        return keys

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = tensordict.clone(False).reshape(-1)  # every term is a mean over samples
        advantage = self._advantage(tensordict)
        stored_latent = tensordict.get(self.tensor_keys.action)
        old_log_prob = tensordict.get(self.tensor_keys.sample_log_prob)
        if stored_latent.requires_grad or old_log_prob.requires_grad:
            raise RuntimeError("the stored latent action and its log-prob must not require grad")

        # log π_θ of the stored latents (one inversion) and the fresh reparameterized samples of the
        # compression and entropy terms (one forward pass), stacked into one flow pass.
        dist = self.actor_network.get_dist(tensordict)
        fresh_rows = max(1, math.ceil(self.compression_batch_fraction * tensordict.shape[0]))
        log_prob, fresh_latent, fresh_log_prob = dist.log_prob_and_rsample(stored_latent, fresh_rows)
        log_weight = self._log_ratio(log_prob, old_log_prob)
        surrogate, clip_fraction, outlier, outlier_fraction = self._surrogate(
            log_weight, advantage, tensordict, "GenPO log-ratio log π_θ − log π_old"
        )
        log_ratio, keep = log_weight.detach(), ~outlier  # the KL and ESS estimates of the samples in use

        x, y = fresh_latent.chunk(2, dim=-1)
        compression_distance = (x - y).norm(dim=-1).mean()
        entropy = entropy_estimate(fresh_log_prob)

        out = TensorDict(
            {
                "loss_objective": -surrogate.mean(),
                "loss_compression": self.compression_coeff * compression_distance,
                "kl_approx": kl_k1(log_ratio, keep),
                "kl_k3": kl_k3(log_ratio, keep),
                "clip_fraction": clip_fraction,
                "ratio_outlier_fraction": outlier_fraction,
                "ESS": effective_sample_size(log_ratio, keep),
                "max_ratio": max_ratio(log_ratio, keep),
                "entropy": entropy.detach(),
                "compression_distance": compression_distance.detach(),
            }
        )
        return self._add_entropy_and_critic(out, entropy, tensordict)
