"""Running observation normalization: every observation counted once, constant features finite, no host sync."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.envs import VecNormV2

from diffrl.numerics import NumericsMonitor
from diffrl.torchrl_compat import vecnorm_statistics


class ObservationNormalizer(VecNormV2):
    """TorchRL's ``VecNormV2`` (its state, specs and checkpoints) with its own update and normalization.

    The running statistics are TorchRL's: the count, E[x] and E[x²] per feature, over all batch
    dimensions, every row weighing the same (decay 1: the plain mean of everything seen, as rsl_rl's
    empirical normalization). Three things differ from ``VecNormV2``:

    - **A partial reset counts only the envs it resets.** A vectorized env's partial reset (Isaac
      Lab's auto-reset, gymnasium's masked reset) returns every env's observation; those of the envs
      that did not reset were counted at the step that produced them. ``VecNormV2`` counts all of
      them again on every step that has a reset (on Isaac-Cartpole with a Gaussian policy, 95 % of
      steps), which weighs observations by how often other envs reset and doubles its cost. Here
      the reset rows are selected by weight (the ``"_reset"`` mask), not by indexing, so nothing
      waits on the host.
    - **No host synchronization.** ``VecNormV2`` synchronizes the CUDA stream on every
      normalization; the statistics live on the env's device and need none.
    - **Constant features stay finite.** ``VecNormV2`` normalizes with sqrt(E[x²] − E[x]²); for a
      feature that is constant (Isaac-Ant has 52 of 60 observations identical across envs at reset)
      round-off makes that difference slightly negative, the square root NaN, and every
      observation of the batch NaN. Here the difference is floored at 0, so a constant feature
      normalizes to 0, and the scale floor ``eps`` defaults to 1e-2 (rsl_rl's) so near-constant
      features are not amplified by 10⁴.

    The env's raw observations go through :attr:`numerics` before they reach the statistics (the
    trainer makes it its deferred monitor): once normalized, one env's NaN would spread to every
    env through the shared statistics, and the report could no longer say which env sent it.

    Example:
        >>> from torchrl.envs import TransformedEnv
        >>> from diffrl.envs.gym import make_gym_env
        >>> normalizer = ObservationNormalizer.for_key("observation")
        >>> env = TransformedEnv(make_gym_env("HalfCheetah-v5", num_envs=2), normalizer)
        >>> bool(env.rollout(5)["next", "observation"].isfinite().all())
        True
        >>> int(normalizer.statistics()[0]["observation"])  # the reset and 5 steps of 2 envs
        12
    """

    def __init__(self, in_keys, out_keys=None, *, eps: float = 1e-2) -> None:
        super().__init__(in_keys, out_keys, decay=1.0, eps=eps, reduce_batch_dims=True)
        self.numerics = NumericsMonitor("off")

    @classmethod
    def for_key(cls, key: str) -> ObservationNormalizer:
        """The running normalizer of ``key`` that training uses."""
        return cls(in_keys=[key])

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._update_and_normalize(next_tensordict, rows=None)

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        reset_key = self.parent.reset_keys[0] if self.parent is not None else "_reset"
        rows = None if tensordict is None else tensordict.get(reset_key, None)
        return self._update_and_normalize(tensordict_reset, rows=rows)

    def _update_and_normalize(self, data: TensorDictBase, rows: torch.Tensor | None) -> TensorDictBase:
        present = [key for key in self.in_keys if key in data.keys(include_nested=True)]
        if not present:
            return data
        for key in present:
            self.numerics.require_finite(
                data.get(key),
                f"observation {key!r} from the env, before normalization (index: env; checks: the rollout's "
                "steps and resets in order)",
            )
        observations = data.select(*present)
        if not self.frozen:
            self.update(observations, rows)
        return data.update(self.normalize(observations))

    def update(self, data: TensorDictBase, rows: torch.Tensor | None = None) -> None:
        """Add the rows of ``data`` (batch dims first; where ``rows`` is true, if given) to the statistics.

        ``rows`` has ``data``'s batch shape (trailing singleton dims allowed, as a ``"_reset"`` mask).
        The statistics stay the mean of every row added, each weighing the same.
        """
        if vecnorm_statistics(self) is None:  # not VecNormV2's check, which reads a (device) flag
            self._maybe_stateful_init(data)
        count, mean, second_moment = self._live_statistics()
        weights = None if rows is None else rows.reshape(data.batch_size.numel(), -1).any(-1)
        for key in data.keys(include_nested=True, leaves_only=True):
            if key not in mean.keys(include_nested=True):
                continue
            running_mean, running_second = mean.get(key), second_moment.get(key)
            x = data.get(key).to(running_mean.dtype).reshape(-1, *running_mean.shape)
            if weights is None:
                # new_full fills on the device; new_tensor would copy from the host and wait for the stream.
                added = x.new_full((), x.shape[0])
                batch_mean, batch_second = x.mean(0), x.pow(2).mean(0)
            else:
                w = weights.to(x.dtype).reshape(-1, *(1,) * running_mean.ndim)
                added = w.sum()
                rows_added = added.clamp_min(1)  # no 0/0 when no row is selected
                batch_mean, batch_second = (w * x).sum(0) / rows_added, (w * x.pow(2)).sum(0) / rows_added
            running_count = count.get(key)
            running_count.add_(added.to(running_count.dtype))
            # The new rows' share of all rows seen (0 when none were added).
            weight = added / running_count.to(x.dtype).clamp_min(1)
            running_mean.lerp_(batch_mean, weight)
            running_second.lerp_(batch_second, weight)

    def normalize(self, data: TensorDictBase) -> TensorDictBase:
        """``data``'s normalized keys, (x − E[x]) / max(sqrt(max(E[x²] − E[x]², 0)), eps), statistics unchanged.

        A normalized key is written under its ``out_keys`` name where that differs.
        """
        _, mean, second_moment = self._live_statistics()
        normalized = data.empty()
        for in_key, out_key in zip(self.in_keys, self.out_keys, strict=True):
            if in_key not in data.keys(include_nested=True):
                continue
            loc, second = mean.get(in_key), second_moment.get(in_key)
            scale = (second - loc.pow(2)).clamp_min(0).sqrt().clamp_min(self.eps)
            x = data.get(in_key)
            normalized.set(out_key, ((x - loc) / scale).to(x.dtype if x.is_floating_point() else loc.dtype))
        return normalized

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
