"""What every diffrl actor offers: its sizes, its exportable sampler, and checked observations.

The actor contract (GenPO, TruDi-PPO, TruDi's DIME actor and the Gaussian actors all keep it):

- ``obs_dim`` (o), ``action_dim`` (d) and ``noise_dim`` (n): the sizes of the exported sampler;
- :meth:`export_sampler`: an ``nn.Module`` ``(observation [B, o], noise [B, n]) -> action [B, d]``
  whose standard normal ``noise`` input replaces every random draw (zeros: the deterministic
  action), which :mod:`diffrl.deploy.export` bakes the observation normalizer into;
- :meth:`sampler_description`: what the deploy contract (``policy.json``) says of the sampler.

Generative actors build on :class:`GenerativePolicy`: the keys TorchRL's losses read, and the
observation check through the actor's :class:`~diffrl.numerics.NumericsMonitor`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import ExplorationType

from diffrl.numerics import NumericsMonitor

DETERMINISTIC_EXPLORATION = (ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN)


@runtime_checkable
class ExportableActor(Protocol):
    """The actor contract :mod:`diffrl.deploy` relies on (see the module docstring)."""

    obs_dim: int
    action_dim: int

    @property
    def noise_dim(self) -> int: ...

    def export_sampler(self) -> nn.Module: ...

    def sampler_description(self) -> dict[str, Any]: ...


def read_observation(tensordict: TensorDictBase, key: NestedKey, module: nn.Module) -> torch.Tensor:
    """``tensordict[key]``, or an error naming the key (and the keys there are) or the dtype mismatch.

    Both are metadata checks: no host synchronization.
    """
    observation = tensordict.get(key, None)
    if observation is None:
        raise KeyError(
            f"the actor reads the observation {key!r}, which the tensordict does not have "
            f"(its keys: {sorted(str(name) for name in tensordict.keys(True, True))})"
        )
    weights = next(module.parameters(), None)
    if weights is not None and observation.dtype != weights.dtype:
        raise TypeError(
            f"observation {key!r} is {observation.dtype} and the actor's weights are {weights.dtype}: cast one of "
            "them (torchrl.envs.DoubleToFloat on the env, or actor.to(observation.dtype))"
        )
    return observation


class ObservingPolicy(TensorDictModuleBase):
    """Base of every diffrl actor module: reads one observation key and checks it through :attr:`numerics`.

    Args:
        observation_key: where the observation [*B, o] is read.
        check_finite: check observations (and, per actor, samples) for NaN/inf through
            :attr:`numerics`: at once by default, once per rollout in the trainer.
    """

    def __init__(self, *, observation_key: NestedKey, check_finite: bool) -> None:
        super().__init__()
        self.observation_key = observation_key
        self.numerics = NumericsMonitor("immediate" if check_finite else "off")

    def _observation(self, tensordict: TensorDictBase) -> torch.Tensor:
        observation = read_observation(tensordict, self.observation_key, self)
        self.numerics.require_finite(observation, f"observation {self.observation_key!r}", tensordict)
        return observation


class GenerativePolicy(ObservingPolicy):
    """Base of the actors whose stored sample (latent action, denoising chain) has an exact likelihood.

    Args:
        observation_key: where the observation [*B, o] is read.
        sample_key: where the sample the loss re-evaluates is stored.
        log_prob_key: where its log-likelihood [*B] is stored.
        check_finite: check observations (and, per actor, samples) for NaN/inf through
            :attr:`numerics`: at once by default, once per rollout in the trainer.
    """

    def __init__(
        self, *, observation_key: NestedKey, sample_key: NestedKey, log_prob_key: NestedKey, check_finite: bool
    ) -> None:
        super().__init__(observation_key=observation_key, check_finite=check_finite)
        self.log_prob_key = log_prob_key
        self._sample_key = sample_key

    @property
    def log_prob_keys(self) -> list[NestedKey]:
        # TorchRL's PPO losses read these two to set their sample_log_prob and action keys.
        return [self.log_prob_key]

    @property
    def dist_sample_keys(self) -> list[NestedKey]:
        return [self._sample_key]
