"""The layout of a run directory, named once: what training writes and what deploy reads."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from torchrl.checkpoint import Checkpoint

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class RunDirectory:
    """Where a training run keeps its files::

        <root>/config.yaml            the resolved Hydra config
        <root>/run.json               the MLflow run id and tracking URI
        <root>/mlflow.db              the default MLflow store (sqlite)
        <root>/mlartifacts/           its artifacts
        <root>/checkpoints/checkpoint-<iteration>/   rotated TorchRL checkpoints
        <root>/policy.pt              the final actor and observation normalizer
        <root>/learning_curve.png     the learning curve
        <root>/export/                ONNX / TorchScript exports
        <root>/.diffrl.lock           held by the training process (its PID inside)
        <root>/metrics_buffer.jsonl   metrics kept while the MLflow store failed (sent at the end; a resume
                                      logs the checkpoint's history instead)
        <root>/abandoned/<time>-after-<iteration>/   what a resume from an earlier checkpoint set aside

    Example:
        >>> RunDirectory("runs/x").checkpoint(25).name
        'checkpoint-000000000025'
        >>> RunDirectory.of_checkpoint("runs/x/checkpoints/checkpoint-000000000025").root.name
        'x'
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDirectory:
        """``<root>/checkpoints/checkpoint-…`` → the run directory (a resumed run continues in place)."""
        return cls(Path(checkpoint).resolve().parent.parent)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, iteration: int) -> Path:
        """The checkpoint directory TorchRL's ``CheckpointRotation`` writes for ``iteration``."""
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{iteration:012d}"

    @staticmethod
    def iteration_of(checkpoint: str | Path) -> int:
        """The iteration a ``checkpoint-<iteration>`` directory holds."""
        return int(Path(checkpoint).name.removeprefix(CHECKPOINT_PREFIX))

    def latest_checkpoint(self) -> Path | None:
        found = sorted(path for path in self.checkpoints.glob(f"{CHECKPOINT_PREFIX}*") if path.is_dir())
        return found[-1] if found else None

    @property
    def policy(self) -> Path:
        return self.root / "policy.pt"

    @property
    def learning_curve(self) -> Path:
        return self.root / "learning_curve.png"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def metrics_buffer(self) -> Path:
        return self.root / "metrics_buffer.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / ".diffrl.lock"

    def set_aside_later_than(self, iteration: int) -> Path | None:
        """Move the checkpoints after ``iteration``, and ``policy.pt`` with them, into
        ``abandoned/<time>-after-<iteration>/``, where they are kept (``None``: there were none).

        A run resumed from an earlier checkpoint starts a new branch: left in place, the old branch's
        later checkpoints would be what ``resume=<run dir>`` and ``load_policy`` pick, and checkpoint
        rotation (newest iterations first) would prune the new branch's checkpoints instead of them.
        ``policy.pt`` goes too: written at a run's end, it is the old branch's final policy (or one from
        before ``iteration``); the new branch writes its own.
        """
        later = [
            path
            for path in self.checkpoints.glob(f"{CHECKPOINT_PREFIX}*")
            if path.name.removeprefix(CHECKPOINT_PREFIX).isdigit() and self.iteration_of(path) > iteration
        ]
        if not later:
            return None
        aside = self.root / "abandoned" / f"{time.strftime('%Y%m%d-%H%M%S')}-after-{iteration}"
        (aside / self.checkpoints.name).mkdir(parents=True)
        for path in later:
            path.rename(aside / self.checkpoints.name / path.name)
        if self.policy.exists():
            self.policy.rename(aside / self.policy.name)
        return aside


def checkpoint_to_resume(path: str | Path) -> Path:
    """The checkpoint ``resume=<path>`` names: ``path`` itself, or a run directory's latest checkpoint.

    Checked before anything is built (Hydra's directory, the lock, the simulator): a path that does
    not exist, a run directory without checkpoints, or a directory that is no TorchRL checkpoint is
    a :class:`ValueError` saying which.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"resume={path}: no such checkpoint")
    run = RunDirectory(path)
    if run.checkpoints.is_dir():
        latest = run.latest_checkpoint()
        if latest is None:
            raise ValueError(f"resume={path}: a run directory without checkpoints (no iteration completed)")
        path = latest
    if not Checkpoint.is_checkpoint(path):
        raise ValueError(
            f"resume={path}: not a TorchRL checkpoint (no readable manifest); name a run directory or one of "
            f"its checkpoints/{CHECKPOINT_PREFIX}* directories"
        )
    return path
