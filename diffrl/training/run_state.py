"""Where a run stands: progress counters, rollout state and the checkpoints that hold them.

A checkpoint holds everything a run needs to continue as if never stopped: the update rule's
modules and optimizer (learning rate included), the observation statistics, the counters and
metrics history (:class:`TrainingProgress`) and the :class:`~diffrl.training.rollout_state.RolloutState`
(random generators, the collector's carried step, the simulator's state where the env exposes one).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Any

from torchrl.checkpoint import Checkpoint, CheckpointError, CheckpointRotation

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

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "frames": self.frames,
            "history": json.dumps(self.history),
            "recent_returns": list(self.recent_returns),
            "recent_lengths": list(self.recent_lengths),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.frames = int(state["frames"])
        self.history = json.loads(state["history"])
        self.recent_returns = deque(state["recent_returns"], maxlen=RECENT_EPISODES)
        self.recent_lengths = deque(state["recent_lengths"], maxlen=RECENT_EPISODES)


class RunState:
    """A run's progress and rollout state, saved with the given components as rotated TorchRL checkpoints.

    Args:
        components: the stateful parts to save by name (the update rule's, the normalizer).
        rollout_state: the per-rank rollout state (gathered from every rank before rank 0 saves).
        sizes: recorded in every checkpoint's metadata (``obs_dim``, ``action_dim``), so that a
            policy can be rebuilt from one (:mod:`diffrl.deploy.policy_loading`).
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
        checkpoint_dir: str | Path | None = None,
        keep_checkpoints: int = 3,
        distributed: DistributedContext | None = None,
    ) -> None:
        if keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
        self.progress = TrainingProgress()
        self.rollout = rollout_state
        self.sizes = sizes
        self.context = distributed or DistributedContext()
        self.checkpoint = Checkpoint(progress=self.progress, rollout=rollout_state, **components)
        self.checkpoints = (
            CheckpointRotation(checkpoint_dir, keep_last=keep_checkpoints) if checkpoint_dir is not None else None
        )

    def save(self, gather_ranks: bool = True) -> Path | None:
        """Write a checkpoint (atomically; old ones rotated) and return its path (rank 0; others ``None``).

        Every rank must call it (its rollout state is gathered) unless ``gather_ranks`` is false,
        as after a crash, when rank 0 saves only its own.
        """
        if self.checkpoints is None:
            return None
        local = self.rollout.capture()
        if self.context.is_distributed and gather_ranks:
            self.rollout.ranks = parallel.gather_objects(local, self.context.world_size)
        else:
            self.rollout.ranks = [local]
        if not self.context.is_main:
            return None
        path = self.checkpoints.save(
            self.checkpoint, step=self.progress.iteration, metadata={"frames": self.progress.frames, **self.sizes}
        )
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
        try:
            verify_tensor_files(path)
            self.checkpoint.load(path)
        except (CheckpointError, RuntimeError, KeyError, ValueError, OSError) as error:
            raise ValueError(f"cannot resume from checkpoint {path}: {error}") from error
        logger.info("resumed from %s at iteration %d, %d frames", path, self.progress.iteration, self.progress.frames)

    def latest(self) -> Path | None:
        """The newest checkpoint (``None`` without checkpoints)."""
        return self.checkpoints.latest() if self.checkpoints is not None else None
