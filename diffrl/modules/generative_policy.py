"""What GenPO's and TruDi's actors share: keys TorchRL's losses read, and the observation check."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.envs.utils import ExplorationType

DETERMINISTIC_EXPLORATION = (ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN)


class GenerativePolicy(TensorDictModuleBase):
    """Base of the actors whose stored sample (latent action, denoising chain) has an exact likelihood.

    Args:
        observation_key: where the observation [*B, o] is read.
        sample_key: where the sample the loss re-evaluates is stored.
        log_prob_key: where its log-likelihood [*B] is stored.
        check_finite: raise on a non-finite observation, naming the offending batch entries.
    """

    def __init__(
        self, *, observation_key: NestedKey, sample_key: NestedKey, log_prob_key: NestedKey, check_finite: bool
    ) -> None:
        super().__init__()
        self.observation_key = observation_key
        self.log_prob_key = log_prob_key
        self.check_finite = check_finite
        self._sample_key = sample_key

    @property
    def log_prob_keys(self) -> list[NestedKey]:
        # TorchRL's PPO losses read these two to set their sample_log_prob and action keys.
        return [self.log_prob_key]

    @property
    def dist_sample_keys(self) -> list[NestedKey]:
        return [self._sample_key]

    def _observation(self, tensordict: TensorDictBase) -> torch.Tensor:
        observation = tensordict.get(self.observation_key)
        if self.check_finite:
            bad = ~torch.isfinite(observation).all(-1)
            if bad.any():
                raise ValueError(
                    f"non-finite observation under {self.observation_key!r} for {int(bad.sum())} of "
                    f"{bad.numel()} batch entries (first at index {bad.nonzero()[0].tolist()})"
                )
        return observation
