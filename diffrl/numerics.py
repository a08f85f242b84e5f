"""Detection of numerical trouble: reported with context, never clamped silently, and without host syncs.

Every check goes through a :class:`NumericsMonitor`. Its mode decides when a failed check raises:

- ``"immediate"`` (the default of a module used on its own): at once, which reads the result on the
  host (one synchronization per check);
- ``"deferred"`` (what the trainer sets): the check only records, with device tensor operations, how
  many entries failed, where the first one was and the magnitudes of that sample's inputs; the
  trainer calls :meth:`NumericsMonitor.raise_if_failed` once per rollout and once per update, which
  is then the only host synchronization the checks cost;
- ``"off"``: nothing is checked (``check_numerics=false`` in the recipes).

The message is the same in every mode: the quantity, how many entries are affected and, for the
first one, the largest magnitude of each floating-point input of that sample, which separates bad
data from a diverged network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

NumericsMode = Literal["immediate", "deferred", "off"]


class NumericalError(FloatingPointError):
    """A loss or policy met a non-finite or exploding quantity; the message says where and why."""


@dataclass
class _FiniteRecord:
    """What deferred checks of one quantity found since the last inspection (device tensors)."""

    failed: torch.Tensor  # entries that failed, summed over calls
    total: int  # entries checked, over calls
    first_index: torch.Tensor  # batch index of the first failing entry (in its call)
    first_call: torch.Tensor  # which call it was in
    input_magnitudes: torch.Tensor  # max |·| of each input of that sample [num_inputs]
    input_names: list[str]
    sample_key: NestedKey | None
    index_names: tuple[str, ...] | None = None  # the batch dimensions a flat index unravels into
    index_shape: tuple[int, ...] | None = None
    calls: int = 1


@dataclass
class _ConditionRecord:
    """A deferred ``require`` of one quantity: whether it ever failed, and the values of its first failure."""

    failed: torch.Tensor
    values: torch.Tensor
    message: Callable[[list[float]], str]
    calls: int = 1


@dataclass
class NumericsMonitor:
    """Checks numbers for NaN, infinities and bounds, raising at once or once per iteration.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> monitor = NumericsMonitor("deferred")
        >>> data = TensorDict({"observation": torch.tensor([[1.0], [float("nan")]])}, batch_size=[2])
        >>> monitor.require_finite(data["observation"], "observation", data)  # no sync, no error yet
        >>> monitor.raise_if_failed()
        Traceback (most recent call last):
        ...
        diffrl.numerics.NumericalError: observation is not finite for 1 of 2 samples; first at index 1; ...
    """

    mode: NumericsMode = "immediate"
    _finite: dict[tuple[str, tuple[str, ...]], _FiniteRecord] = field(default_factory=dict, repr=False)
    _conditions: dict[str, _ConditionRecord] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("immediate", "deferred", "off"):
            raise ValueError(f"numerics mode must be 'immediate', 'deferred' or 'off', got {self.mode!r}")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def require_finite(
        self,
        value: torch.Tensor,
        what: str,
        tensordict: TensorDictBase | None = None,
        sample_key: NestedKey | None = None,
        index_names: tuple[str, ...] | None = None,
    ) -> None:
        """Every entry of ``value`` [N, ...] is finite; the failing sample's inputs come from ``tensordict``.

        With ``index_names`` (e.g. ``("env", "step")``), ``value`` is [*batch, ...] over that many
        leading dimensions, and the message names the first failing sample by each of them.
        """
        if not self.enabled:
            return
        index_shape = None
        if index_names is not None:
            index_shape = tuple(value.shape[: len(index_names)])
            value = value.flatten(0, len(index_names) - 1)
            tensordict = tensordict.reshape(-1) if tensordict is not None else None
        bad = ~torch.isfinite(value.detach())
        per_sample = bad.reshape(bad.shape[0], -1).any(-1) if bad.ndim else bad.reshape(1)
        failed = per_sample.sum()
        first = per_sample.to(torch.uint8).argmax()
        names, magnitudes = _input_magnitudes(tensordict, per_sample.shape[0], first, value)
        # One record per quantity and set of inputs: a check with other inputs must not overwrite a failure.
        record = self._finite.get((what, tuple(names)))
        if record is None:
            self._finite[what, tuple(names)] = record = _FiniteRecord(
                failed,
                per_sample.numel(),
                first,
                torch.zeros_like(first),
                magnitudes,
                names,
                sample_key,
                index_names,
                index_shape,
            )
        else:
            keep_earlier = record.failed > 0
            record.first_index = torch.where(keep_earlier, record.first_index, first)
            record.first_call = torch.where(keep_earlier, record.first_call, torch.full_like(first, record.calls))
            record.input_magnitudes = torch.where(keep_earlier, record.input_magnitudes, magnitudes)
            record.failed = record.failed + failed
            record.total += per_sample.numel()
            record.calls += 1
        if self.mode == "immediate":
            self.raise_if_failed()

    def require(self, failed: torch.Tensor, what: str, values: torch.Tensor, message: Callable[[list[float]], str]):
        """``failed`` (a 0-d bool tensor) is false; else ``message(values at the first failure)`` is raised."""
        if not self.enabled:
            return
        values = values.detach().float().reshape(-1)
        record = self._conditions.get(what)
        if record is None:
            self._conditions[what] = _ConditionRecord(failed, values, message)
        else:
            record.values = torch.where(record.failed, record.values, values)
            record.failed = record.failed | failed
            record.calls += 1
        if self.mode == "immediate":
            self.raise_if_failed()

    def raise_if_failed(self) -> None:
        """Raise :class:`NumericalError` for the first failed check since the last call; then forget them all."""
        finite, conditions = self._finite, self._conditions
        self._finite, self._conditions = {}, {}
        if not finite and not conditions:
            return
        flags = [record.failed for record in finite.values()] + [record.failed for record in conditions.values()]
        status = torch.stack([flag.to(torch.int64) for flag in flags]).tolist()  # the one host synchronization
        for ((what, _), record), failed in zip(finite.items(), status, strict=False):
            if failed:
                raise NumericalError(_finite_message(what, record, failed))
        for (what, record), failed in zip(conditions.items(), status[len(finite) :], strict=True):
            if failed:
                raise NumericalError(f"{what}: {record.message(record.values.tolist())}")


def _input_magnitudes(
    tensordict: TensorDictBase | None, batch: int, index: torch.Tensor, fallback: torch.Tensor
) -> tuple[list[str], torch.Tensor]:
    """max |·| of every floating-point entry of sample ``index`` (device ops only)."""
    names, magnitudes = [], []
    entries = [] if tensordict is None else tensordict.items(include_nested=True, leaves_only=True)
    for key, entry in entries:
        if isinstance(entry, torch.Tensor) and entry.is_floating_point() and entry.ndim and entry.shape[0] == batch:
            names.append(str(key))
            magnitudes.append(entry.detach().reshape(batch, -1)[index].abs().max().float())
    if not magnitudes:
        return [], fallback.new_zeros(0, dtype=torch.float32)
    return names, torch.stack(magnitudes)


def _finite_message(what: str, record: _FiniteRecord, failed: int) -> str:
    index = int(record.first_index)
    if record.index_names is not None:
        position = []
        for size in reversed(record.index_shape):
            index, within = divmod(index, size)
            position.append(within)
        named = zip(record.index_names, reversed(position), strict=True)
        where = "first at " + ", ".join(f"{name} {value}" for name, value in named)
    else:
        where = f"first at index {index}"
    if record.calls > 1:
        where += f" of check {int(record.first_call) + 1} of {record.calls} this iteration"
    if record.sample_key is not None:
        where += f" (stored sample {record.sample_key!r})"
    inputs = ", ".join(
        f"{name}: max|·|={value:.4g}"
        for name, value in zip(record.input_names, record.input_magnitudes.tolist(), strict=True)
    )
    return f"{what} is not finite for {failed} of {record.total} samples; {where}; that sample's inputs: {inputs}"
