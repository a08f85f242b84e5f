"""Where a run stands: progress counters, rollout state and the checkpoints that hold them.

A checkpoint holds everything a run needs to continue as if never stopped: the update rule's
modules and optimizer (learning rate included), the observation statistics, the counters and
metrics history (:class:`TrainingProgress`) and the :class:`~diffrl.training.rollout_state.RolloutState`
(random generators, the collector's carried step, the simulator's state where the env exposes one).

A run that stops mid-iteration (an exception, Ctrl-C, SIGTERM) must not checkpoint what it holds
then: the envs have moved past the last update and the weights may be half-updated or
non-finite. The loop therefore marks every completed iteration (:meth:`RunState.mark_boundary`,
copies on the device), and a crash writes that copy (:meth:`RunState.save_boundary`): the exact
state the next iteration started from, which resumes as if the run had never stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torchrl.checkpoint import Checkpoint, CheckpointError, CheckpointRotation

from diffrl.numerics import NumericalError
from diffrl.training import distributed as parallel
from diffrl.training.checkpoint_files import verify_tensor_files
from diffrl.training.distributed import DistributedContext
from diffrl.training.rollout_state import RolloutState

logger = logging.getLogger("diffrl.training")

RECENT_EPISODES = 100  # rsl_rl reports the mean over the last 100 finished episodes: a smooth, comparable curve


class TrainingProgress:
    """What a resumed run continues, never restarts: counters, the metrics history (for the learning
    curve) and the window of recent episodes."""

    def __init__(self) -> None:
        self.iteration = 0
        self.frames = 0
        self.history: list[dict[str, float]] = []
        self.recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.recent_lengths: deque[float] = deque(maxlen=RECENT_EPISODES)

    def record_episodes(self, done: torch.Tensor, returns: torch.Tensor, lengths: torch.Tensor) -> dict[str, float]:
        """Add a rollout's finished episodes ([env, step] each) to the window; the mean return and length of
        the last ``RECENT_EPISODES`` finished (NaN before the first one ends) and how many finished now.

        The episodes enter in the order they ended (by step, then env): when more end in one rollout than
        the window holds, it keeps the latest, not those of the highest-numbered envs (on Isaac Lab's
        terrain tasks the env number picks the terrain).
        """
        done_in_time_order = done.mT
        self.recent_returns.extend(returns.mT[done_in_time_order].tolist())
        self.recent_lengths.extend(lengths.mT[done_in_time_order].tolist())
        finished = float(done.sum())
        if not self.recent_returns:
            return {"episode_return": math.nan, "episode_length": math.nan, "episodes_finished": finished}
        return {
            "episode_return": sum(self.recent_returns) / len(self.recent_returns),
            "episode_length": sum(self.recent_lengths) / len(self.recent_lengths),
            "episodes_finished": finished,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "frames": self.frames,
            "history": json.dumps(self.history),
            "recent_returns": list(self.recent_returns),
            "recent_lengths": list(self.recent_lengths),
        }

    def copy(self) -> TrainingProgress:
        """A copy that later iterations do not change (the history's entries are never modified)."""
        duplicate = TrainingProgress()
        duplicate.iteration, duplicate.frames, duplicate.history = self.iteration, self.frames, list(self.history)
        duplicate.recent_returns.extend(self.recent_returns)
        duplicate.recent_lengths.extend(self.recent_lengths)
        return duplicate

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.frames = int(state["frames"])
        self.history = json.loads(state["history"])
        self.recent_returns = deque(state["recent_returns"], maxlen=RECENT_EPISODES)
        self.recent_lengths = deque(state["recent_lengths"], maxlen=RECENT_EPISODES)


class _BoundaryState:
    """Stands in for a component in the boundary checkpoint: saves the state recorded at the last boundary."""

    def __init__(self) -> None:
        self.read: Callable[[], Any] | None = None

    def state_dict(self) -> Any:
        return self.read()

    def load_state_dict(self, state: Any) -> None:  # pragma: no cover - a boundary is only ever saved
        raise TypeError("a boundary state is written, never loaded: load the checkpoint into the live run")


def _tensors(state: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a (nested) state dict, with its dotted path."""
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            yield from _tensors(value, f"{prefix}.{index}")


def non_finite_entries(states: dict[str, Any]) -> list[str]:
    """The floating-point tensors of ``states`` (name -> state dict) that hold NaN or inf; one host sync per device."""
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for path, tensor in _tensors(states):
        if tensor.is_floating_point() and tensor.numel():
            by_device.setdefault(tensor.device, []).append((path, tensor))
    bad = []
    for entries in by_device.values():
        finite = torch.stack([torch.isfinite(tensor).all() for _, tensor in entries]).tolist()
        bad += [path for (path, _), ok in zip(entries, finite, strict=True) if not ok]
    return bad


class RunState:
    """A run's progress and rollout state, saved with the given components as rotated TorchRL checkpoints.

    Args:
        components: the stateful parts to save by name (the update rule's, the normalizer).
        rollout_state: the per-rank rollout state (gathered from every rank before rank 0 saves).
        sizes: recorded in every checkpoint's metadata (``obs_dim``, ``action_dim``), so that a
            policy can be rebuilt from one (:mod:`diffrl.deploy.policy_loading`).
        identity: what the run is (e.g. ``{"algorithm": "genpo", "task": "Isaac-Cartpole"}``), recorded in
            every checkpoint's metadata; :meth:`load` refuses a checkpoint of another identity.
        checkpoint_dir: where rotated checkpoints go (``None``: no checkpoints).
        keep_checkpoints: how many recent checkpoints to keep.
        distributed: this process's place in a ``torchrun`` launch.
    """

    def __init__(
        self,
        components: dict[str, Any],
        rollout_state: RolloutState,
        *,
        sizes: dict[str, int],
        identity: dict[str, str] | None = None,
        checkpoint_dir: str | Path | None = None,
        keep_checkpoints: int = 3,
        distributed: DistributedContext | None = None,
    ) -> None:
        if keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
        self.progress = TrainingProgress()
        self.rollout = rollout_state
        self.sizes = sizes
        self.identity = dict(identity or {})
        self.context = distributed or DistributedContext()
        self.checkpoint = Checkpoint(progress=self.progress, rollout=rollout_state, **components)
        self.checkpoints = (
            CheckpointRotation(checkpoint_dir, keep_last=keep_checkpoints) if checkpoint_dir is not None else None
        )
        self._boundary = {name: _BoundaryState() for name in self.checkpoint.components}
        self._boundary_checkpoint = Checkpoint(**self._boundary)
        self._boundary_step: int | None = None  # the iteration mark_boundary recorded last
        self._boundary_metadata: dict[str, Any] = {}
        self.saved_iteration = 0  # the iteration whose state is on disk (a fresh start needs no checkpoint)

    def _metadata(self) -> dict[str, Any]:
        return {"frames": self.progress.frames, **self.sizes, **self.identity}

    @staticmethod
    def _refuse_non_finite(states: dict[str, Any], what: str) -> None:
        bad = non_finite_entries(states)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NumericalError(
                f"{what} holds NaN/inf in {shown}: not written, so that the earlier checkpoints stay the run's "
                "good state"
            )

    def mark_boundary(self) -> None:
        """Record the state after a completed iteration (device copies, no host sync), for :meth:`save_boundary`."""
        if self.checkpoints is None or not self.context.is_main:  # only rank 0 writes checkpoints
            return
        for name, component in self.checkpoint.components.items():
            if component is self.progress:
                self._boundary[name].read = self.progress.copy().state_dict
            elif component is self.rollout:
                ranks = [self.rollout.capture()]
                self._boundary[name].read = lambda ranks=ranks: {"ranks": ranks}
            else:
                state = copy.deepcopy(component.state_dict())
                self._boundary[name].read = lambda state=state: state
        self._boundary_step, self._boundary_metadata = self.progress.iteration, self._metadata()

    def save_boundary(self) -> Path | None:
        """After a crash: checkpoint the last completed iteration as :meth:`mark_boundary` recorded it.

        Writes nothing when that iteration is already checkpointed, or when no iteration completed,
        or when its state is not finite (the message says so; earlier checkpoints are untouched).
        This rank's rollout state only: the other ranks may be gone.
        """
        step = self._boundary_step
        if self.checkpoints is None or step in (None, self.saved_iteration) or not self.context.is_main:
            return None
        states = {name: holder.state_dict() for name, holder in self._boundary.items()}
        try:
            self._refuse_non_finite(states, f"the state after iteration {step}")
        except NumericalError as error:
            logger.error("%s", error)
            return None
        path = self.checkpoints.save(self._boundary_checkpoint, step=step, metadata=self._boundary_metadata)
        self.saved_iteration = step
        logger.info("checkpoint of the last completed iteration written: %s", path)
        return path

    def save(self) -> Path | None:
        """Write a checkpoint of the live state (atomically; old ones rotated) and return its path (rank 0).

        Every rank must call it (its rollout state is gathered).
        Non-finite weights, optimizer or normalizer state is a :class:`~diffrl.numerics.NumericalError`
        and is not written (as with ``check_numerics=false`` and a diverged update).
        """
        if self.checkpoints is None:
            return None
        local = self.rollout.capture()
        if self.context.is_distributed:
            self.rollout.ranks = parallel.gather_objects(local, self.context.world_size)
        else:
            self.rollout.ranks = [local]
        if not self.context.is_main:
            # Every rank records the save: the loop's closing save is a collective, so all ranks must skip it alike.
            self.saved_iteration = self.progress.iteration
            return None
        live = {name: component for name, component in self.checkpoint.components.items() if name != "progress"}
        states = {name: component.state_dict() for name, component in live.items()}
        self._refuse_non_finite(states, f"the checkpoint of iteration {self.progress.iteration}")
        path = self.checkpoints.save(self.checkpoint, step=self.progress.iteration, metadata=self._metadata())
        self.saved_iteration = self.progress.iteration
        logger.info("checkpoint written: %s", path)
        return path

    def load(self, path: str | Path) -> None:
        """Restore every component, the counters and the rollout state.

        A missing, corrupted or incompatible checkpoint is a :class:`ValueError` naming the file
        and what is wrong.
        """
        path = Path(path)
        if not path.exists():
            raise ValueError(f"checkpoint {path} does not exist")
        if not Checkpoint.is_checkpoint(path):
            raise ValueError(f"{path} is not a TorchRL checkpoint (no readable manifest): corrupted or wrong path")
        self._refuse_other_identity(path)
        try:
            verify_tensor_files(path)
            self.checkpoint.load(path)
        except (CheckpointError, RuntimeError, KeyError, ValueError, OSError) as error:
            raise ValueError(f"cannot resume from checkpoint {path}: {error}") from error
        self.saved_iteration = self.progress.iteration
        logger.info("resumed from %s at iteration %d, %d frames", path, self.progress.iteration, self.progress.frames)

    def _refuse_other_identity(self, path: Path) -> None:
        """A checkpoint of another algorithm or task is named as such (not as missing or mismatched weights)."""
        try:
            recorded = Checkpoint.manifest(path).get("metadata", {})
        except (CheckpointError, OSError, ValueError) as error:
            raise ValueError(f"cannot resume from checkpoint {path}: unreadable manifest ({error})") from error
        differing = {
            key: (recorded[key], wanted)
            for key, wanted in self.identity.items()
            if key in recorded and recorded[key] != wanted
        }
        if differing:
            theirs = ", ".join(f"{key} {value[0]!r}" for key, value in differing.items())
            ours = ", ".join(f"{key} {value[1]!r}" for key, value in differing.items())
            raise ValueError(
                f"cannot resume from checkpoint {path}: it is a run of {theirs}, and this run is {ours}; resume it "
                "with the recipe and task it was trained with"
            )

    def latest(self) -> Path | None:
        """The newest checkpoint (``None`` without checkpoints)."""
        return self.checkpoints.latest() if self.checkpoints is not None else None
