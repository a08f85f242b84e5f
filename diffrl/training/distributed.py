"""Data-parallel training across processes and GPUs, launched with ``torchrun``.

Each rank steps its own envs (seeds from ``seed + rank·num_envs``, its own noise) and computes gradients on its own
rollout; what must agree is agreed through ``torch.distributed`` collectives (gloo on CPU,
NCCL on CUDA — the same code path, so two CPU ranks test what eight GPUs run):

- parameters start equal (broadcast from rank 0) and stay equal: gradients are averaged
  before clipping, so every rank takes the same optimizer step;
- advantage normalization uses the moments of all ranks' rollouts;
- the KL that drives the adaptive learning rate is the mean over ranks;
- the observation normalizer's statistics are merged after each rollout, so every rank
  normalizes with the statistics of all data seen by all ranks;
- episode metrics are averaged over ranks; rank 0 logs and writes checkpoints.

A launch looks like ``torchrun --standalone --nproc_per_node 2 recipes/genpo_isaaclab.py ...``
(see ``docs/scale.md``). Without ``torchrun`` the context is the single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from tensordict import TensorDict

logger = logging.getLogger("diffrl.training")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a ``torchrun`` launch (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun`` sets them."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        return cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, requested: str) -> str:
        """Each rank on a node gets its own GPU: ``"cuda"`` → ``"cuda:<local_rank>"``."""
        if self.is_distributed and torch.device(requested).type == "cuda":
            return f"cuda:{self.local_rank}"
        return requested


def init_distributed(device: str) -> DistributedContext:
    """Join the ``torchrun`` process group (NCCL for CUDA, gloo for CPU); a no-op outside ``torchrun``."""
    context = DistributedContext.from_environment()
    if context.is_distributed and not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d joined the %s process group", context.rank, context.world_size, backend)
    return context


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (called once, before training)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def average_gradients(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace each gradient by its mean over ranks, in one flat all-reduce."""
    with_grad = [parameter for parameter in parameters if parameter.grad is not None]
    flat = torch.cat([parameter.grad.reshape(-1) for parameter in with_grad])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for parameter in with_grad:
        count = parameter.grad.numel()
        parameter.grad.copy_(flat[offset : offset + count].view_as(parameter.grad))
        offset += count


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum over ranks (a new tensor; the input is left as it was)."""
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def all_reduce_mean(values: dict[str, float], world_size: int) -> dict[str, float]:
    """Average a dict of scalars over ranks (every rank must pass the same keys)."""
    keys = sorted(values)
    stacked = torch.tensor([values[key] for key in keys], dtype=torch.float64)
    total = all_reduce_sum(stacked) / world_size
    return dict(zip(keys, total.tolist(), strict=True))


def all_gather_tensor(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every rank's ``tensor`` (same shape on all), stacked in rank order [world_size, ...], on every rank."""
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.stack(gathered)


def gather_objects(obj: Any, world_size: int) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def merge_normalizer_statistics(
    statistics: tuple[TensorDict, TensorDict, TensorDict],
    shared: tuple[TensorDict, TensorDict, TensorDict] | None,
) -> tuple[TensorDict, TensorDict, TensorDict]:
    """Statistics of all ranks' data from each rank's running (count, E[x], E[x²]).

    Every rank started from the same ``shared`` statistics (``None``: no data yet) and added
    its own rollout; the merged statistics are those of the union of the data, computed from
    the sums n, Σx, Σx² in float64: ``S = S_shared + Σ_r (S_r − S_shared)`` for each.
    """
    local = _moment_sums(statistics)
    base = _moment_sums(shared) if shared is not None else tuple(sums.apply(torch.zeros_like) for sums in local)
    count, first, second = (
        base_sums.apply(lambda b, s: b + all_reduce_sum(s - b), local_sums)
        for base_sums, local_sums in zip(base, local, strict=True)
    )
    like_count, like_mean, like_second = statistics
    return (
        count.apply(lambda n, like: n.round().to(like.dtype), like_count),
        first.apply(lambda total, n, like: (total / n).to(like.dtype), count, like_mean),
        second.apply(lambda total, n, like: (total / n).to(like.dtype), count, like_second),
    )


def _moment_sums(statistics: tuple[TensorDict, TensorDict, TensorDict]) -> tuple[TensorDict, TensorDict, TensorDict]:
    """(count, E[x], E[x²]) → (n, Σx, Σx²) in float64."""
    count, mean, second_moment = statistics
    n = count.apply(lambda c: c.double())
    return n, mean.apply(lambda m, c: m.double() * c, n), second_moment.apply(lambda m, c: m.double() * c, n)
