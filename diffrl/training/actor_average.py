"""An exponential moving average of the actor's weights, for evaluation, checkpoints and export only.

FPO++ (arXiv 2602.02481) deploys such an average of its flow policy: the trained weights keep
collecting, the average is what a user runs. Its schedule is the authors' (one step per
iteration, started from the current weights once ``warmup_updates`` iterations have passed).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class ActorAverage(nn.Module):
    """θ̄ ← decay·θ̄ + (1 − decay)·θ after each iteration's update, once warm.

    Iteration n (counted from 1): n < ``warmup_updates`` leaves θ̄ unused; n = ``warmup_updates``
    copies θ into θ̄; n > ``warmup_updates`` averages. :attr:`active` says whether θ̄ is the policy
    to deploy (n > ``warmup_updates``; before that the trained actor is). Buffers (e.g. a frozen
    schedule) are copied, not averaged. The state dict holds ``average.*`` (the averaged actor's own
    state dict, loadable into a fresh actor) and ``updates``, so a resumed run continues the average.

    Args:
        actor: the trained actor (deep-copied; the copy's parameters never require grad).
        decay: the average's decay (FPO++: 0.95).
        warmup_updates: iterations before the average starts (FPO++: 500).

    Example:
        >>> actor = nn.Linear(1, 1, bias=False)
        >>> average = ActorAverage(actor, decay=0.5, warmup_updates=1)
        >>> with torch.no_grad():
        ...     _ = actor.weight.fill_(2.0)
        >>> average.step(actor)  # iteration 1 = warmup: copy
        >>> with torch.no_grad():
        ...     _ = actor.weight.fill_(4.0)
        >>> average.step(actor)  # 0.5 * 2 + 0.5 * 4
        >>> average.active, float(average.average.weight)
        (True, 3.0)
    """

    def __init__(self, actor: nn.Module, *, decay: float, warmup_updates: int) -> None:
        super().__init__()
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        if warmup_updates < 1:
            raise ValueError(f"ema_warmup_updates must be >= 1, got {warmup_updates}")
        self.average = copy.deepcopy(actor).requires_grad_(False)
        self.decay, self.warmup_updates = decay, warmup_updates
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self._updates = 0  # a host mirror of the buffer: stepping reads no device value

    @property
    def active(self) -> bool:
        return self._updates > self.warmup_updates

    @torch.no_grad()
    def step(self, actor: nn.Module) -> None:
        self._updates += 1
        self.updates.fill_(self._updates)
        if self._updates < self.warmup_updates:
            return
        if self._updates == self.warmup_updates:
            self.average.load_state_dict(actor.state_dict())
            return
        averaged, current = list(self.average.parameters()), [p.detach() for p in actor.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay)
        for mine, theirs in zip(self.average.buffers(), actor.buffers(), strict=True):
            mine.copy_(theirs)

    @staticmethod
    def deployed_state(
        actor_state: Mapping[str, Any], average_state: Mapping[str, Any] | None, warmup_updates: int
    ) -> dict[str, Any]:
        """From saved state dicts, the weights to deploy: the average once warm (as :attr:`active`), else the actor."""
        if average_state is None or int(average_state["updates"]) <= warmup_updates:
            return dict(actor_state)
        prefix = "average."
        return {key.removeprefix(prefix): value for key, value in average_state.items() if key.startswith(prefix)}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._updates = int(self.updates)
        return result
