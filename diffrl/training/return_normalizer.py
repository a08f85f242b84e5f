"""Reward scaling by the discounted return's spread, so one critic support fits every task (REPPO, arXiv 2507.11019)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class CarriedReturns:
    """Each env's running discounted return G and whether its last step ended an episode.

    They follow this process's own envs' episodes, so they are saved per rank with the rollout
    (:class:`~diffrl.training.rollout_state.RolloutState`), not with the shared statistics, and start
    at 0 again when resumed episodes restart from a reset.
    """

    def __init__(self) -> None:
        self.running: torch.Tensor | None = None  # [N] float64
        self.previous_done: torch.Tensor | None = None  # [N] bool

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (device copies)."""
        if self.running is None:
            return {"running": None, "previous_done": None}
        return {"running": self.running.clone(), "previous_done": self.previous_done.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running, self.previous_done = state["running"], state["previous_done"]


class DiscountedReturnNormalizer(nn.Module):
    """Rewards are multiplied by s = 1 / max(std(G), max|G| / ``return_bound``), G the running discounted return.

    Each env's G_t = γ·G_{t−1}·(1 − done_{t−1}) + r_t is carried across rollouts; the mean and variance
    of all G seen so far (merged per rollout, float64) and their largest magnitude give s. With the
    scaled rewards the discounted returns have a standard deviation of about 1 and stay within
    ±``return_bound``, so the critic's fixed support (±10 by default) fits them without per-task
    tuning. :meth:`update` takes a whole rollout and the update scales that rollout with the
    statistics including it, so s is constant within an iteration. Before any data s = 1. Under
    ``torchrun`` every rank merges every rank's rollout statistics in rank order, so all agree on s.

    Args:
        gamma: the discount of G (the training discount).
        return_bound: the bound on |G| after scaling.

    Example:
        >>> normalizer = DiscountedReturnNormalizer(gamma=0.0, return_bound=10.0)
        >>> normalizer.update(torch.tensor([[1.0, 3.0], [1.0, 3.0]]), torch.zeros(2, 2, dtype=torch.bool))
        >>> round(float(normalizer.scale), 6)  # gamma 0: G = r, std 1.1547
        0.866025
    """

    def __init__(self, gamma: float = 0.99, return_bound: float = 10.0) -> None:
        super().__init__()
        if not 0 <= gamma <= 1 or not return_bound > 0:
            raise ValueError(f"need 0 <= gamma <= 1 and return_bound > 0, got {gamma}, {return_bound}")
        self.gamma, self.return_bound = gamma, return_bound
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum_of_squares", torch.zeros((), dtype=torch.float64))  # Σ (G − mean)²
        self.register_buffer("max_abs", torch.zeros((), dtype=torch.float64))
        self.carried = CarriedReturns()

    @torch.no_grad()
    def update(
        self, reward: torch.Tensor, done: torch.Tensor, gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        """Fold a rollout in: ``reward`` and ``done`` [N, T] (time last).

        ``gather`` stacks a tensor from every rank in rank order (``torchrun``; ``None``: one process).
        """
        reward = reward.to(torch.float64)
        carried = self.carried
        if carried.running is None or carried.running.shape != reward.shape[:1]:
            carried.running = reward.new_zeros(reward.shape[0])
            carried.previous_done = torch.zeros(reward.shape[0], dtype=torch.bool, device=reward.device)
        returns = torch.empty_like(reward)
        running, previous_done = carried.running, carried.previous_done
        for step in range(reward.shape[-1]):
            running = self.gamma * running * (~previous_done) + reward[:, step]
            returns[:, step] = running
            previous_done = done[:, step]
        carried.running, carried.previous_done = running, previous_done
        batch_mean = returns.mean()
        # count, mean, Σ (G − mean)², max|G| of this rank's rollout
        moments = torch.stack(
            [
                returns.new_full((), returns.numel()),
                batch_mean,
                (returns - batch_mean).pow(2).sum(),
                returns.abs().max(),
            ]
        )
        for rank_count, rank_mean, rank_squares, rank_max in moments[None] if gather is None else gather(moments):
            total = self.count + rank_count
            delta = rank_mean - self.mean
            self.sum_of_squares.add_(rank_squares + delta.pow(2) * self.count * rank_count / total)
            self.mean.add_(delta * rank_count / total)
            self.count.copy_(total)
            self.max_abs.copy_(torch.maximum(self.max_abs, rank_max))

    @property
    def scale(self) -> torch.Tensor:
        """s (0-d, float32); 1 before two returns have been seen."""
        variance = self.sum_of_squares / (self.count - 1).clamp_min(1)
        spread = torch.maximum(variance.sqrt(), self.max_abs / self.return_bound)
        return torch.where((self.count > 1) & (spread > 0), 1 / spread.clamp_min(1e-12), 1.0).float()
