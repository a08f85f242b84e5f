"""What the training loop asks of an update family: turn one collected rollout into new parameters.

Two families share the loop (``docs/training.md``):

- the likelihood-ratio family (PPO, GenPO, TruDi-PPO): :class:`~diffrl.training.ppo_update.PPOUpdate`,
  GAE then epochs × minibatches of a ratio objective under a KL-adaptive learning rate;
- the pathwise family (REPPO, TruDi as published): a critic step then an actor step through Q per
  minibatch, on a soft λ-return, with the old actor synced once per iteration. It subclasses
  :class:`UpdateRule` the same way; the loop does not know which family it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from diffrl.numerics import NumericsMonitor
from diffrl.torchrl_compat import selects_out_keys


class UpdateRule(ABC):
    """One update family: an actor, the modules and optimizer state it trains, and :meth:`update`.

    Subclasses set :attr:`actor` (the collecting policy) and implement :meth:`update` and
    :meth:`checkpoint_components`. Metrics stay on the device as 0-d tensors: the loop reads all of
    them in one host transfer per iteration.
    """

    actor: TensorDictModuleBase
    numerics: NumericsMonitor

    @abstractmethod
    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Learn from one rollout [num_envs, steps]; returns the iteration's metrics as 0-d tensors."""

    @abstractmethod
    def checkpoint_components(self) -> dict[str, Any]:
        """The stateful parts a checkpoint saves, by name (``"actor"`` is the one deploy reads)."""

    def episode_components(self) -> dict[str, Any]:
        """Stateful parts that follow this process's running episodes (``state_dict``/``load_state_dict``):
        saved per rank with the rollout, restored only where the episodes continue. None by default."""
        return {}

    @property
    def deployed_actor(self) -> TensorDictModuleBase:
        """The actor a user runs (``policy.pt``, export): the trained one, unless the rule keeps an average."""
        return self.actor

    @property
    @abstractmethod
    def learning_rate(self) -> torch.Tensor:
        """The current learning rate (0-d tensor), reported every iteration."""


def adam(parameters: list[torch.nn.Parameter], learning_rate: float, *, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam (AdamW with ``weight_decay > 0``) whose rate is a float64 0-d tensor, for a step that never syncs.

    On CUDA the step is ``capturable``: it stays on the GPU, so it can sit in a CUDA graph. On a CPU it
    is ``fused``: one kernel for all parameters instead of a Python loop over them
    (``benchmarks/update_profile.py --policy gaussian`` times both), equal to the loop to float32
    rounding.

    Example:
        >>> optimizer = adam([torch.nn.Parameter(torch.zeros(3))], 1e-3)
        >>> optimizer.param_groups[0]["lr"].dtype, optimizer.defaults["fused"]
        (torch.float64, True)
    """
    device = parameters[0].device
    optimizer = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    return optimizer(
        parameters,
        lr=torch.tensor(learning_rate, dtype=torch.float64, device=device),
        weight_decay=weight_decay,
        capturable=device.type == "cuda",
        fused=True if device.type == "cpu" else None,
    )


def share_deferred_numerics(*modules: torch.nn.Module) -> NumericsMonitor:
    """One deferred monitor for an update's loss and actor: their checks record on the device, and the
    loop raises once per iteration (a module's immediate checks would read the host every minibatch).

    A module whose checks are off (``check_finite=False``) keeps them off.
    """
    monitor = NumericsMonitor("deferred")
    for module in modules:
        own = getattr(module, "numerics", None)
        if isinstance(own, NumericsMonitor) and own.enabled:
            module.numerics = monitor
    return monitor


def require_whole_output(loss_module: torch.nn.Module) -> None:
    """An update rule optimizes the sum of every ``loss_*`` term its loss returns and reports the rest, so
    a loss narrowed with ``select_out_keys`` would silently drop terms from the objective: refused."""
    if selects_out_keys(loss_module):
        raise ValueError(
            f"{type(loss_module).__name__} has select_out_keys applied: an update rule optimizes every loss_* "
            "term the loss returns, so a selection would drop terms from the objective; pass the loss whole "
            "and choose what to log from the metrics"
        )


def minibatch_size(num_samples: int, num_minibatches: int) -> int:
    """The size of each of ``num_minibatches`` equal minibatches of ``num_samples``; fewer samples than
    minibatches is a :class:`ValueError` (a recipe checks its config with it before building anything).

    Example:
        >>> minibatch_size(4096 * 24, 4)
        24576
    """
    size = num_samples // num_minibatches
    if size < 1:
        raise ValueError(
            f"num_minibatches={num_minibatches} exceeds the rollout's {num_samples} samples (num_envs × steps_per_env)"
        )
    return size


def shuffled_minibatches(flat: TensorDictBase, num_minibatches: int) -> Iterator[TensorDictBase]:
    """One epoch over a flat batch: ``num_minibatches`` disjoint minibatches of equal size in a fresh
    random order (the remainder of an uneven split sits out that epoch)."""
    size = minibatch_size(flat.numel(), num_minibatches)
    order = torch.randperm(flat.numel(), device=flat.device)
    for index in range(num_minibatches):
        yield flat[order[index * size : (index + 1) * size]]
