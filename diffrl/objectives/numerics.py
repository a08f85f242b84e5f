"""Detection of numerical trouble in losses: reported with context, never clamped silently."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey


class NumericalError(FloatingPointError):
    """A loss met a non-finite or exploding quantity; the message says where and why."""


def require_finite(value: torch.Tensor, what: str, tensordict: TensorDictBase, sample_key: NestedKey) -> None:
    """Raise :class:`NumericalError` if ``value`` has a NaN or an infinity.

    The message names the quantity, how many batch entries are affected and, for the first
    one, the largest magnitude of the stored sample (``sample_key``) and of every
    floating-point input it had, which separates bad data from a diverged network.
    """
    bad = ~torch.isfinite(value)
    if not bad.any():
        return
    flat_bad = bad.reshape(bad.shape[0], -1).any(-1) if bad.ndim else bad.reshape(1)
    first = int(flat_bad.nonzero()[0])
    context = []
    for key, entry in tensordict.items(include_nested=True, leaves_only=True):
        if isinstance(entry, torch.Tensor) and entry.is_floating_point() and entry.shape[:1] == flat_bad.shape:
            context.append(f"{key}: max|·|={float(entry[first].abs().max()):.4g}")
    raise NumericalError(
        f"{what} is not finite for {int(flat_bad.sum())} of {flat_bad.numel()} samples; first at index {first} "
        f"(stored sample {sample_key!r}); that sample's inputs: " + ", ".join(context)
    )
