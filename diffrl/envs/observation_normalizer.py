"""Running observation normalization that survives constant features."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.envs import VecNormV2

from diffrl.numerics import NumericsMonitor
from diffrl.torchrl_compat import vecnorm_normalize, vecnorm_statistics


class ObservationNormalizer(VecNormV2):
    """TorchRL's ``VecNormV2`` with its variance kept non-negative.

    ``VecNormV2`` tracks E[x] and E[x²] and normalizes with sqrt(E[x²] − E[x]²). For a feature
    that is constant (Isaac-Ant has 52 of 60 observations identical across envs at reset)
    float round-off makes that difference slightly negative, the square root NaN, and every
    observation of the batch NaN. Here E[x²] is raised to at least E[x]² before the parent's
    formula, so a constant feature normalizes to 0, and the scale floor ``eps`` defaults to
    1e-2 (rsl_rl's) so near-constant features are not amplified by 10⁴.

    The env's raw observations go through :attr:`numerics` before they reach the statistics (the
    trainer makes it its deferred monitor): once normalized, one env's NaN would spread to every
    env through the shared statistics, and the report could no longer say which env sent it.

    Example:
        >>> from torchrl.envs import TransformedEnv
        >>> from diffrl.envs.gym import make_gym_env
        >>> normalizer = ObservationNormalizer(in_keys=["observation"], decay=1.0, reduce_batch_dims=True)
        >>> env = TransformedEnv(make_gym_env("HalfCheetah-v5", num_envs=2), normalizer)
        >>> bool(env.rollout(5)["next", "observation"].isfinite().all())
        True
    """

    def __init__(self, *args, eps: float = 1e-2, **kwargs) -> None:
        super().__init__(*args, eps=eps, **kwargs)
        self.numerics = NumericsMonitor("off")

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        for key in self.in_keys:  # resets come through here too
            if key in next_tensordict.keys(include_nested=True):
                self.numerics.require_finite(
                    next_tensordict[key],
                    f"observation {key!r} from the env, before normalization (index: env; checks: the rollout's "
                    "steps and resets in order)",
                )
        return super()._step(tensordict, next_tensordict)

    def _norm(self, data: TensorDictBase, loc: TensorDictBase, var: TensorDictBase, count: TensorDictBase):
        second_moment = var.apply(lambda moment, mean: torch.maximum(moment, mean.pow(2)), loc)
        return super()._norm(data, loc, second_moment, count)

    @classmethod
    def for_key(cls, key: str) -> ObservationNormalizer:
        """The running normalizer of ``key`` training uses: every sample weighs the same (decay 1,
        as rsl_rl's empirical normalization), statistics over all batch dimensions."""
        return cls(in_keys=[key], decay=1.0, reduce_batch_dims=True)

    def normalize(self, data: TensorDictBase) -> TensorDictBase:
        """``data`` normalized with the stored statistics, which are left as they are."""
        return vecnorm_normalize(self, data)

    def statistics(self) -> tuple[TensorDictBase, TensorDictBase, TensorDictBase]:
        """Copies of the running (count, E[x], E[x²]), one entry per normalized key."""
        return tuple(entry.clone() for entry in self._live_statistics())

    def load_statistics(self, count: TensorDictBase, mean: TensorDictBase, second_moment: TensorDictBase) -> None:
        """Overwrite the running statistics in place (e.g. with those merged across ranks)."""
        for live, new in zip(self._live_statistics(), (count, mean, second_moment), strict=True):
            live.update_(new)

    def _live_statistics(self) -> tuple[TensorDictBase, TensorDictBase, TensorDictBase]:
        statistics = vecnorm_statistics(self)
        if statistics is None:
            raise RuntimeError("the normalizer has seen no data yet")
        return statistics
