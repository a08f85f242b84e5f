"""Every use of TorchRL's private API in diffrl, in one place, so that the pin can be a range.

diffrl needs a few things TorchRL 0.14 has no public accessor for. Each is wrapped here, checked
against the installed TorchRL by ``tests/test_torchrl_compat.py``, and is the only place to change
when TorchRL changes them:

- ``ClipPPOLoss._clip_bounds``, ``_has_critic`` and ``_maybe_normalize_advantage``;
- ``ClipPPOLoss.clip_value``, a 0-d buffer that ``loss_critic`` branches on (``if self.clip_value:``),
  which diffrl turns into a Python float;
- ``Collector._carrier``: the next step's input (observation, running episode return and length),
  which a resumed run must restore;
- ``VecNormV2``'s running statistics ``_count``, ``_loc`` and ``_var`` (E[x²]), which
  :class:`~diffrl.envs.observation_normalizer.ObservationNormalizer` updates and reads itself;
- tensordict's ``_OutKeysSelect``, the forward hook ``select_out_keys`` installs on a loss.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn.common import _OutKeysSelect
from torchrl.collectors import Collector
from torchrl.envs import VecNormV2
from torchrl.objectives import ClipPPOLoss


def ppo_clip_bounds(loss: ClipPPOLoss) -> tuple[torch.Tensor, torch.Tensor]:
    """(log(1 − ε), log(1 + ε)): the clip range of the log-ratio, as 0-d tensors (reading them would sync)."""
    return loss._clip_bounds


def ppo_has_critic(loss: ClipPPOLoss) -> bool:
    """Whether the loss has a value network (and therefore a critic loss)."""
    return bool(loss._has_critic)


def ppo_normalized_advantage(loss: ClipPPOLoss, advantage: torch.Tensor, tensordict: TensorDictBase) -> torch.Tensor:
    """The advantage as TorchRL's PPO losses use it: standardized per minibatch if the loss asks for it."""
    return loss._maybe_normalize_advantage(advantage, tensordict, update_norm=True)


def ppo_clip_value_as_float(loss: ClipPPOLoss) -> ClipPPOLoss:
    """Makes the loss's value clip a Python float (or leaves ``None``); returns the loss.

    TorchRL keeps ``clip_value`` as a 0-d buffer and tests it with ``if self.clip_value:`` on every
    critic loss. On a GPU that reads the device, a host sync per minibatch; under ``torch.compile`` it
    is a data-dependent branch that splits the graph. As a float the branch is decided in Python and
    the clamp takes the same value. Idempotent.
    """
    clip_value = loss._buffers.pop("clip_value", None)
    if clip_value is not None:
        loss.clip_value = float(clip_value)
    return loss


def collector_carried_step(collector: Collector) -> TensorDictBase:
    """The collector's next-step input (a live tensordict: updating it in place restores a rollout)."""
    return collector._carrier


def vecnorm_statistics(normalizer: VecNormV2) -> tuple[TensorDictBase, TensorDictBase, TensorDictBase] | None:
    """The live running (count, E[x], E[x²]) of a ``VecNormV2`` (``None`` before it has seen data)."""
    if normalizer._loc is None:
        return None
    return normalizer._count, normalizer._loc, normalizer._var


def selects_out_keys(module: torch.nn.Module) -> bool:
    """Whether ``select_out_keys`` narrows ``module``'s output (tensordict's forward hook)."""
    return any(isinstance(hook, _OutKeysSelect) for hook in module._forward_hooks.values())
