"""The pathwise trust-region loss REPPO and TruDi share: Q(s, a_θ) differentiated through the sampler, a per-state
KL gate.

REPPO (arXiv 2507.11019) with a squashed-Gaussian actor; TruDi (arXiv 2606.15260) is the same loss with
DIME's diffusion actor (arXiv 2502.02316) and its path KL. Symbols: B the batch, d the action dimension.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from diffrl.modules.hl_gauss_q_value import HLGaussQValue
from diffrl.modules.pathwise_policy import PathwisePolicy
from diffrl.numerics import NumericsMonitor
from diffrl.objectives.soft_lambda_return import SoftLambdaReturn

Gate = Literal["clipped", "penalty"]


class PathwiseTrustRegionLoss(LossModule):
    """Per state s of a minibatch, with a_θ ~ π_θ(·|s) reparameterized and c(s) = KL(π_old(·|s) ‖ π_θ(·|s)):

        L_actor = mean_s  where(c(s) < ε, α·log π_θ(a_θ|s) − Q(s, a_θ), λ·c(s))      (``gate="clipped"``)
        L_actor = mean_s  α·log π_θ(a_θ|s) − Q(s, a_θ) + λ·c(s)                       (``gate="penalty"``)
        L_α = α·(mean_s Ĥ(s) − H*),   L_λ = λ·(ε − mean_s c(s))                        (dual ascent on log α, log λ)
        L_critic = mean_s CE(HL-Gauss(G(s, a)), softmax(logits(s, a)))                 (G: the soft λ-return)
        L_aux = c_aux · mean_s (1 − d)·mean_H (P(φ(s, a)) − φ(s', a'))²               (self-predictive, optional)

    Q in the actor term is the critic with its parameters detached: the actor step moves the actor
    only, the gradient reaching it through ∂Q/∂a · ∂a/∂θ along the whole sampler. π_old is a frozen copy
    of the actor, synced by :meth:`sync_old_actor` once per iteration (after all epochs). α and λ are
    learned through their logs: α rises while the entropy estimate Ĥ is below the target
    H* = ``target_entropy_per_dim``·d, λ while the mean KL is above ε.

    The update calls :meth:`critic_loss` and then :meth:`actor_loss` on each minibatch (a critic step,
    then an actor step under the updated critic); ``forward`` returns both, as a TorchRL loss does.

    Outputs: ``loss_actor``, ``loss_critic``, ``loss_critic_aux`` (with the auxiliary head),
    ``loss_alpha``, ``loss_lambda`` and the diagnostics ``path_kl`` (mean c), ``path_kl_max``,
    ``trust_region_fraction`` (the share of states with c ≥ ε, whose actor term is λ·c), ``alpha``,
    ``lagrange_multiplier``, ``entropy_estimate`` (mean Ĥ), ``log_prob`` (mean log π of a_θ),
    ``q_value`` (mean Q(s, a_θ)), ``value_target`` (mean G) and ``target_clip_fraction`` (the share of
    targets outside the critic's support).

    Args:
        actor_network: a :class:`~diffrl.modules.pathwise_policy.PathwisePolicy`.
        critic_network: an :class:`~diffrl.modules.hl_gauss_q_value.HLGaussQValue`.
        trust_region_kl: ε.
        target_entropy_per_dim: H*/d (default: the class's ``default_target_entropy_per_dim``).
        init_alpha, init_lagrange_multiplier: α and λ at the start.
        gate: ``"clipped"`` (the authors' per-state switch) or ``"penalty"`` (always add λ·c).
        aux_loss_coeff: c_aux (0: no auxiliary loss; needs the critic's ``aux_head`` otherwise).
    """

    @dataclass
    class _AcceptedKeys:
        """The rollout entries the loss reads.

        Attributes:
            observation: the (stored, normalized) observation. Default ``"observation"``.
            action: the action taken. Default ``"action"``.
            value_target: the soft λ-return, written by :class:`SoftLambdaReturn`. Default ``"value_target"``.
            next_features: φ(s', a'), written by :class:`SoftLambdaReturn`. Default ``"next_q_features"``.
            terminated: the termination flag of the step. Default ``("next", "terminated")``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        value_target: NestedKey = "value_target"
        next_features: NestedKey = "next_q_features"
        terminated: NestedKey = ("next", "terminated")

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    # H*/d when none is given: REPPO's −0.5 (a differential entropy); TruDi's estimate has its own scale.
    default_target_entropy_per_dim = -0.5

    def __init__(
        self,
        actor_network: PathwisePolicy,
        critic_network: HLGaussQValue,
        *,
        trust_region_kl: float = 0.1,
        target_entropy_per_dim: float | None = None,
        init_alpha: float = 0.01,
        init_lagrange_multiplier: float = 0.01,
        gate: Gate = "clipped",
        aux_loss_coeff: float = 0.0,
    ) -> None:
        super().__init__()
        if target_entropy_per_dim is None:
            target_entropy_per_dim = self.default_target_entropy_per_dim
        if not isinstance(actor_network, PathwisePolicy):
            raise TypeError(f"the pathwise loss needs a PathwisePolicy actor, got {type(actor_network).__name__}")
        if not isinstance(critic_network, HLGaussQValue):
            raise TypeError(f"the pathwise loss needs an HLGaussQValue critic, got {type(critic_network).__name__}")
        if not trust_region_kl > 0 or not init_alpha > 0 or not init_lagrange_multiplier > 0:
            raise ValueError(
                f"trust_region_kl, init_alpha and init_lagrange_multiplier must be > 0, got "
                f"{trust_region_kl}, {init_alpha}, {init_lagrange_multiplier}"
            )
        if gate not in ("clipped", "penalty"):
            raise ValueError(f"gate must be 'clipped' or 'penalty', got {gate!r}")
        if aux_loss_coeff < 0:
            raise ValueError(f"aux_loss_coeff must be >= 0, got {aux_loss_coeff}")
        if aux_loss_coeff > 0 and critic_network.predictor is None:
            raise ValueError("aux_loss_coeff > 0 needs the critic's auxiliary head (HLGaussQValue(aux_head=True))")
        self.actor_network, self.critic_network = actor_network, critic_network
        self.old_actor = copy.deepcopy(actor_network).requires_grad_(False)
        self.trust_region_kl = trust_region_kl
        self.target_entropy = target_entropy_per_dim * actor_network.action_dim
        self.gate, self.aux_loss_coeff = gate, aux_loss_coeff
        device = next(actor_network.parameters()).device
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha), device=device))
        self.log_lagrange_multiplier = nn.Parameter(torch.tensor(math.log(init_lagrange_multiplier), device=device))
        self.numerics = NumericsMonitor("immediate")
        self.set_keys(observation=actor_network.observation_key, action=actor_network.action_key)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        if self._value_estimator is not None:
            self._value_estimator.keys.next_observation = ("next", self.tensor_keys.observation)
            self._value_estimator.keys.value_target = self.tensor_keys.value_target
            self._value_estimator.keys.next_features = self.tensor_keys.next_features
            self._value_estimator.keys.terminated = self.tensor_keys.terminated

    def make_value_estimator(self, value_type: object = None, *, gamma: float = 0.99, lmbda: float = 0.95) -> None:
        """The soft λ-return (the only estimator this loss takes): :class:`SoftLambdaReturn`."""
        if value_type is not None:
            raise ValueError(f"the pathwise loss trains on the soft λ-return only, got value_type={value_type!r}")
        self._value_estimator = SoftLambdaReturn(self.actor_network, self.critic_network, gamma=gamma, lmbda=lmbda)
        self._forward_value_estimator_keys()

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @property
    def lagrange_multiplier(self) -> torch.Tensor:
        return self.log_lagrange_multiplier.exp()

    def actor_parameters(self) -> list[nn.Parameter]:
        """What the actor step trains: the actor, log α and log λ (the authors keep the duals with the actor)."""
        return [*self.actor_network.parameters(), self.log_alpha, self.log_lagrange_multiplier]

    @torch.no_grad()
    def sync_old_actor(self) -> None:
        """π_old ← π_θ (a hard copy, once per iteration)."""
        self.old_actor.load_state_dict(self.actor_network.state_dict())

    def critic_loss(self, tensordict: TensorDictBase) -> TensorDict:
        keys = self.tensor_keys
        critic = self.critic_network
        observation, action = tensordict.get(keys.observation), tensordict.get(keys.action)
        target = tensordict.get(keys.value_target)
        if target.shape != observation.shape[:-1]:  # a [B, 1] target would broadcast against the [B] histogram
            raise ValueError(
                f"{keys.value_target!r} has shape {tuple(target.shape)}, the batch is {tuple(observation.shape[:-1])}: "
                "store one return per state, [*B], as SoftLambdaReturn writes it"
            )
        features = critic.features(observation, action)
        log_probs = critic.logits(features).log_softmax(-1)
        cross_entropy = -(critic.target_distribution(target) * log_probs).sum(-1)
        out = {
            "loss_critic": cross_entropy.mean(),
            "value_target": target.mean().detach(),
            "target_clip_fraction": ((target < critic.v_min) | (target > critic.v_max)).float().mean(),
        }
        if self.aux_loss_coeff > 0:
            continuing = (~tensordict.get(keys.terminated).squeeze(-1)).to(features.dtype)
            error = (critic.predict_next_features(features) - tensordict.get(keys.next_features)).pow(2).mean(-1)
            out["loss_critic_aux"] = self.aux_loss_coeff * (continuing * error).mean()
        return TensorDict(out, batch_size=[])

    def actor_loss(self, tensordict: TensorDictBase) -> TensorDict:
        observation = tensordict.get(self.tensor_keys.observation)
        sample = self.actor_network.rsample(observation)
        # The critic with detached parameters: the actor step moves the actor only.
        with TensorDict.from_module(self.critic_network).detach().to_module(self.critic_network):
            q_value = self.critic_network.q_value(observation, sample.action)
        kl = self.actor_network.trust_region_kl(observation, self.old_actor)
        self.numerics.require_finite(kl, "the trust-region KL", tensordict)
        self.numerics.require_finite(sample.log_prob, "the actor's log-probability", tensordict)
        alpha, multiplier = self.alpha, self.lagrange_multiplier
        objective = alpha.detach() * sample.log_prob - q_value
        inside = kl < self.trust_region_kl
        if self.gate == "clipped":
            per_state = torch.where(inside, objective, multiplier.detach() * kl)
        else:
            per_state = objective + multiplier.detach() * kl
        entropy = sample.entropy_estimate.mean()
        mean_kl = kl.mean()
        return TensorDict(
            {
                "loss_actor": per_state.mean(),
                "loss_alpha": alpha * (entropy.detach() - self.target_entropy),
                "loss_lambda": multiplier * (self.trust_region_kl - mean_kl.detach()),
                "path_kl": mean_kl.detach(),
                "path_kl_max": kl.max().detach(),
                "trust_region_fraction": (~inside).float().mean(),
                "alpha": alpha.detach(),
                "lagrange_multiplier": multiplier.detach(),
                "entropy_estimate": entropy.detach(),
                "log_prob": sample.log_prob.mean().detach(),
                "q_value": q_value.mean().detach(),
            },
            batch_size=[],
        )

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        return self.critic_loss(tensordict).update(self.actor_loss(tensordict))
