"""REPPO's soft λ-return: the critic's target, with the entropy bonus folded into the reward (arXiv 2507.11019).

Symbols: N envs, T steps per env (a rollout is [N, T], TorchRL's layout), d the action dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from diffrl.modules.hl_gauss_q_value import HLGaussQValue
from diffrl.modules.pathwise_policy import PathwisePolicy


def soft_lambda_return(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    next_log_prob: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    *,
    gamma: float,
    lmbda: float,
    alpha: torch.Tensor | float,
) -> torch.Tensor:
    """G_t = r̃_t + γ(1 − d_t)·[τ_t ? V'_t : λ G_{t+1} + (1 − λ) V'_t], with r̃_t = r_t − γ(1 − d_t)·α·log π(a'_t|s'_t).

    All inputs are [N, T] (the last axis is time); d is ``terminated``, τ ``truncated``, V'_t = Q(s'_t, a'_t)
    with a'_t ~ π(s'_t) a second draw at the next state. The trace is cut at a truncation (the next
    step of the rollout starts a new episode) and at the rollout's end (G_T := V'_{T−1}). At a
    termination nothing is bootstrapped, the entropy bonus included (the authors' JAX code masks it;
    their torch code does not). A step both terminated and truncated counts as terminated.

    Example (one step, terminated: nothing bootstrapped; then one step that continues):
        >>> reward, value = torch.tensor([[1.0, 1.0]]), torch.tensor([[5.0, 2.0]])
        >>> log_prob, no = torch.tensor([[-1.0, -1.0]]), torch.zeros(1, 2, dtype=torch.bool)
        >>> terminated = torch.tensor([[True, False]])
        >>> soft_lambda_return(reward, value, log_prob, terminated, no, gamma=0.5, lmbda=0.9, alpha=0.1)
        tensor([[1.0000, 2.0500]])
    """
    not_terminated = (~terminated).to(reward.dtype)
    soft_reward = reward - gamma * not_terminated * alpha * next_log_prob
    returns = torch.empty_like(reward)
    following = next_value[:, -1]
    for step in reversed(range(reward.shape[-1])):
        continuation = torch.where(
            truncated[:, step], next_value[:, step], lmbda * following + (1 - lmbda) * next_value[:, step]
        )
        following = soft_reward[:, step] + gamma * not_terminated[:, step] * continuation
        returns[:, step] = following
    return returns


class SoftLambdaReturn:
    """The pathwise family's value estimator: draws a' ~ π(s') and writes the soft λ-return of a rollout.

    For a rollout [N, T] it computes, without gradient and in one batched pass, a'_t ~ π(·|s'_t), its
    log-probability, V'_t = Q(s'_t, a'_t) and the critic features φ(s'_t, a'_t) (the auxiliary
    loss's targets), then :func:`soft_lambda_return`. The actor, critic and α are those that
    collected the rollout, so the draw has the law the authors' per-step draw during collection has.

    Args:
        actor, critic: the collecting policy and the Q critic.
        gamma, lmbda: the discount and λ (REPPO: 0.99, 0.95).
        keys: where the rollout's entries are read and the targets written (:class:`Keys`).
    """

    @dataclass
    class Keys:
        """Entries read (``next_observation``, ``reward``, ``terminated``, ``truncated``) and written."""

        next_observation: NestedKey = ("next", "observation")
        reward: NestedKey = ("next", "reward")
        terminated: NestedKey = ("next", "terminated")
        truncated: NestedKey = ("next", "truncated")
        value_target: NestedKey = "value_target"
        next_features: NestedKey = "next_q_features"

    def __init__(
        self, actor: PathwisePolicy, critic: HLGaussQValue, *, gamma: float, lmbda: float, keys: Keys | None = None
    ) -> None:
        if not 0 <= gamma <= 1 or not 0 <= lmbda <= 1:
            raise ValueError(f"gamma and lmbda must lie in [0, 1], got {gamma}, {lmbda}")
        self.actor, self.critic = actor, critic
        self.gamma, self.lmbda = gamma, lmbda
        self.keys = keys or self.Keys()

    @torch.no_grad()
    def __call__(
        self, rollout: TensorDictBase, alpha: torch.Tensor, reward_scale: torch.Tensor | float = 1.0
    ) -> TensorDictBase:
        """Writes ``value_target`` [N, T] and ``next_q_features`` [N, T, H] into ``rollout`` [N, T]."""
        if rollout.batch_dims != 2:
            raise ValueError(f"the soft λ-return needs a rollout [num_envs, steps], got {rollout.batch_size}")
        keys = self.keys
        next_observation = rollout.get(keys.next_observation)
        draw = self.actor.rsample(next_observation)
        features = self.critic.features(next_observation, draw.action)
        next_value = self.critic.value(self.critic.logits(features))
        target = soft_lambda_return(
            rollout.get(keys.reward).squeeze(-1) * reward_scale,
            next_value,
            draw.log_prob,
            rollout.get(keys.terminated).squeeze(-1),
            rollout.get(keys.truncated).squeeze(-1),
            gamma=self.gamma,
            lmbda=self.lmbda,
            alpha=alpha,
        )
        rollout.set(keys.value_target, target)
        rollout.set(keys.next_features, features)
        return rollout
