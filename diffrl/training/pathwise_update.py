"""The pathwise family's update (REPPO, TruDi): soft λ-return, then per minibatch a critic step and an actor step.

REPPO (arXiv 2507.11019) and TruDi (arXiv 2606.15260) share it; see ``docs/training.md`` for how it
sits beside the likelihood-ratio family's :class:`~diffrl.training.ppo_update.PPOUpdate`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from tensordict import TensorDictBase

from diffrl.objectives.pathwise import PathwiseTrustRegionLoss
from diffrl.training import distributed as parallel
from diffrl.training.distributed import DistributedContext
from diffrl.training.return_normalizer import DiscountedReturnNormalizer
from diffrl.training.update_rule import (
    UpdateRule,
    adam,
    require_whole_output,
    share_deferred_numerics,
    shuffled_minibatches,
)


class PathwiseUpdate(UpdateRule):
    """Per iteration, on the current rollout only (no replay):

    1. the rewards scaled by :class:`~diffrl.training.return_normalizer.DiscountedReturnNormalizer`
       (``normalize_rewards``), and the soft λ-return computed by the loss's value estimator
       (:class:`~diffrl.objectives.soft_lambda_return.SoftLambdaReturn`: a second draw a' ~ π(s') per step);
    2. ``num_epochs`` × ``num_minibatches`` shuffled minibatches, each a critic step (cross-entropy to
       the HL-Gauss target, plus the auxiliary loss) and then an actor step under the updated critic
       (pathwise actor loss and the two dual losses), each with its own Adam and gradient-norm clip;
    3. the old actor hard-synced to the actor (:meth:`PathwiseTrustRegionLoss.sync_old_actor`).

    The observations the update reads are the ones the collector stored, normalized once with the
    statistics of their step, so the trust-region KL is not charged for normalizer drift.

    Nothing in :meth:`update` reads a tensor on the host; the loss's numerical checks (a non-finite
    KL or log-probability) are deferred to :attr:`numerics`.

    Reference: REPPO, Voelcker et al., arXiv 2507.11019; TruDi's authors' schedule (``docs/trudi.md``).

    Args:
        loss_module: a :class:`~diffrl.objectives.pathwise.PathwiseTrustRegionLoss` (``REPPOLoss``, ``TruDiLoss``).
        num_epochs, num_minibatches: the schedule (the authors: 4 × 64–128 at 1024 envs × 128 steps).
        learning_rate: Adam's rate for the actor and its duals (the authors: 3e-4).
        critic_learning_rate: Adam's rate for the critic (``None``: ``learning_rate``).
        max_grad_norm: the gradient-norm clip of each step (the authors: 0.5).
        gamma, lmbda: the soft λ-return's discount and λ (the authors: 0.99, 0.95).
        normalize_rewards: scale rewards by the discounted return's spread.
        return_bound: the normalizer's bound on the scaled discounted return.
        distributed: this process's place in a ``torchrun`` launch (``None``: one process).

    Example:
        >>> from diffrl.modules import HLGaussQValue, SquashedGaussianActor
        >>> from diffrl.objectives import REPPOLoss
        >>> actor = SquashedGaussianActor(action_dim=2, obs_dim=3, hidden_sizes=[8])
        >>> loss = REPPOLoss(actor, HLGaussQValue(obs_dim=3, action_dim=2, hidden_sizes=[8], num_bins=11))
        >>> update = PathwiseUpdate(loss, num_epochs=1, num_minibatches=2)
        >>> sorted(update.checkpoint_components())
        ['actor', 'actor_optimizer', 'critic', 'critic_optimizer', 'loss', 'reward_normalizer']
    """

    def __init__(
        self,
        loss_module: PathwiseTrustRegionLoss,
        *,
        num_epochs: int = 4,
        num_minibatches: int = 64,
        learning_rate: float = 3e-4,
        critic_learning_rate: float | None = None,
        max_grad_norm: float = 0.5,
        gamma: float = 0.99,
        lmbda: float = 0.95,
        normalize_rewards: bool = True,
        return_bound: float = 10.0,
        distributed: DistributedContext | None = None,
    ) -> None:
        if not isinstance(loss_module, PathwiseTrustRegionLoss):
            raise TypeError(
                f"PathwiseUpdate trains a pathwise loss (REPPOLoss, TruDiLoss), got {type(loss_module).__name__}; "
                "likelihood-ratio losses use trainer=ppo"
            )
        require_whole_output(loss_module)
        if num_epochs < 1 or num_minibatches < 1:
            raise ValueError(f"num_epochs and num_minibatches must be >= 1, got {num_epochs}, {num_minibatches}")
        critic_learning_rate = learning_rate if critic_learning_rate is None else critic_learning_rate
        if not learning_rate > 0 or not critic_learning_rate > 0:
            raise ValueError(f"learning rates must be > 0, got {learning_rate}, {critic_learning_rate}")
        self.loss_module = loss_module
        self.actor, self.critic = loss_module.actor_network, loss_module.critic_network
        self.num_epochs, self.num_minibatches = num_epochs, num_minibatches
        self.max_grad_norm = max_grad_norm
        self.context = distributed or DistributedContext()
        if self.context.is_distributed:
            parallel.broadcast_parameters(loss_module)
        loss_module.make_value_estimator(gamma=gamma, lmbda=lmbda)
        self.actor_parameters = loss_module.actor_parameters()
        self.critic_parameters = list(self.critic.parameters())
        device = self.actor_parameters[0].device
        self.actor_optimizer = adam(self.actor_parameters, learning_rate)
        self.critic_optimizer = adam(self.critic_parameters, critic_learning_rate)
        self.reward_normalizer = (
            DiscountedReturnNormalizer(gamma, return_bound).to(device) if normalize_rewards else None
        )
        self.numerics = share_deferred_numerics(loss_module, self.actor)

    @property
    def learning_rate(self) -> torch.Tensor:
        return self.actor_optimizer.param_groups[0]["lr"]

    def checkpoint_components(self) -> dict[str, Any]:
        components = {
            "actor": self.actor,
            "critic": self.critic,
            "loss": self.loss_module,  # α, λ and the old actor
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
        }
        if self.reward_normalizer is not None:
            components["reward_normalizer"] = self.reward_normalizer
        return components

    def episode_components(self) -> dict[str, Any]:
        if self.reward_normalizer is None:
            return {}
        return {"discounted_returns": self.reward_normalizer.carried}

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        reward_scale = torch.ones((), device=batch.device)
        if self.reward_normalizer is not None:
            gather = (
                partial(parallel.all_gather_tensor, world_size=self.context.world_size)
                if self.context.is_distributed
                else None
            )
            self.reward_normalizer.update(
                batch["next", "reward"].squeeze(-1), batch["next", "done"].squeeze(-1), gather=gather
            )
            reward_scale = self.reward_normalizer.scale
        self.loss_module.value_estimator(batch, alpha=self.loss_module.alpha.detach(), reward_scale=reward_scale)
        flat = batch.reshape(-1)
        sums: dict[str, torch.Tensor] = {}
        zero = torch.zeros((), device=flat.device)
        critic_norm_sum, actor_norm_sum = zero.clone(), zero.clone()
        for _ in range(self.num_epochs):
            for minibatch in shuffled_minibatches(flat, self.num_minibatches):
                critic_out = self.loss_module.critic_loss(minibatch)
                critic_norm_sum += self._step(critic_out, self.critic_optimizer, self.critic_parameters)
                actor_out = self.loss_module.actor_loss(minibatch)
                actor_norm_sum += self._step(actor_out, self.actor_optimizer, self.actor_parameters)
                for key, value in (*critic_out.items(), *actor_out.items()):
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
        self.loss_module.sync_old_actor()
        count = self.num_epochs * self.num_minibatches
        metrics = {key: value / count for key, value in sums.items()}
        metrics["critic_grad_norm"] = critic_norm_sum / count
        metrics["actor_grad_norm"] = actor_norm_sum / count
        metrics["reward_scale"] = reward_scale
        return metrics

    def _step(
        self, out: TensorDictBase, optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter]
    ) -> torch.Tensor:
        """Sum the ``loss_*`` terms, backpropagate, average across ranks, clip, step; returns the pre-clip norm."""
        loss = sum(value for key, value in out.items() if key.startswith("loss_"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.context.is_distributed:
            parallel.average_gradients(parameters, self.context.world_size)
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        optimizer.step()
        return norm
