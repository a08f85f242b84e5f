"""Rebuild a trained policy (actor + observation normalizer) from what a run leaves on disk.

A run directory (:func:`~diffrl.training.experiment.run_experiment`) holds ``config.yaml``,
``policy.pt`` (the final actor, normalizer and resolved config) and ``checkpoints/checkpoint-…``
(TorchRL checkpoints). :func:`load_policy` accepts any of them, or an MLflow run through
:func:`download_policy`, and rebuilds the actor from the config exactly as training built it.

Symbols: o the observation size, d the action dimension.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensordict import TensorDict
from tensordict.nn import TensorDictModuleBase
from torchrl.checkpoint import Checkpoint, CheckpointError

from diffrl.envs.observation_normalizer import ObservationNormalizer
from diffrl.training.actor_average import ActorAverage
from diffrl.training.checkpoint_files import verify_tensor_files
from diffrl.training.experiment import actor_dimensions
from diffrl.training.run_directory import CHECKPOINT_PREFIX, RunDirectory

logger = logging.getLogger("diffrl.deploy")

POLICY_ARTIFACT = RunDirectory("").policy.name  # the training run logs policy.pt at its artifact root


@dataclass
class LoadedPolicy:
    """A trained actor with its observation normalizer and the config it was trained with.

    Attributes:
        actor: the TensorDict actor (``GenPOActor``, ``TruDiActor`` or the Gaussian ``ProbabilisticActor``),
            in eval mode, on CPU.
        observation_normalizer: the frozen running normalizer the actor saw observations through,
            or ``None`` when the run did not normalize observations.
        config: the run's resolved config (``algorithm``, ``env``, ...).
        source: the file or checkpoint directory the weights came from.
        run_dir: the run directory, when known (it holds ``run.json`` with the MLflow run).
        obs_dim, action_dim: o and d.
    """

    actor: TensorDictModuleBase
    observation_normalizer: ObservationNormalizer | None
    config: dict[str, Any]
    source: Path
    run_dir: Path | None
    obs_dim: int
    action_dim: int

    @property
    def algorithm(self) -> str:
        return str(self.config["algorithm"]["name"])

    @property
    def observation_key(self) -> str:
        return str(self.config["env"]["observation_key"])

    def normalize(self, observation: torch.Tensor) -> torch.Tensor:
        """The observation as the actor saw it in training, [*B, o] → [*B, o] (identity without normalizer)."""
        if self.observation_normalizer is None:
            return observation
        data = TensorDict({self.observation_key: observation}, batch_size=observation.shape[:-1])
        return self.observation_normalizer.normalize(data)[self.observation_key]


def _rebuild(
    actor_state: dict[str, torch.Tensor],
    normalizer_state: dict[str, Any] | None,
    config: dict[str, Any],
    source: Path,
    run_dir: Path | None,
    dims: tuple[int, int],
) -> LoadedPolicy:
    """The actor (and normalizer) the config builds for ``dims`` = (o, d), with the saved states loaded.

    Whether the run normalized observations is read off what was saved (a normalizer state or none),
    not off the config."""
    actor_cfg = OmegaConf.create(config["algorithm"]["actor"])
    observation_key = config["env"]["observation_key"]
    actor = instantiate(actor_cfg, observation_key=observation_key, **actor_dimensions(actor_cfg, *dims))
    normalizer = None
    try:
        actor.load_state_dict(actor_state)
        if normalizer_state is not None:
            normalizer = ObservationNormalizer.for_key(observation_key)
            with warnings.catch_warnings():  # "VecNorm wasn't initialized": irrelevant in one process
                warnings.filterwarnings("ignore", message="VecNorm wasn't initialized")
                normalizer.load_state_dict(normalizer_state)
            normalizer.freeze()
    except (RuntimeError, KeyError, ValueError) as error:
        raise ValueError(f"{source} does not match its config: {error}") from error
    actor.eval()
    logger.info("loaded %s policy from %s", config["algorithm"]["name"], source)
    return LoadedPolicy(actor, normalizer, config, source, run_dir, *dims)


def _read_policy_file(path: Path) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a truncated or foreign file
        raise ValueError(f"cannot read the policy file {path}: {error}") from error
    expected = {"actor", "config", "obs_dim", "action_dim"}
    if not isinstance(saved, dict) or not expected <= saved.keys():
        raise ValueError(f"{path} is not a diffrl policy file (expected the keys {sorted(expected)})")
    return saved


def _policy_from_file(path: Path, saved: dict[str, Any]) -> LoadedPolicy:
    """The policy of ``saved``, what :func:`_read_policy_file` read from ``path``."""
    run_dir = path.parent if RunDirectory(path.parent).run_info.exists() else None
    dims = (saved["obs_dim"], saved["action_dim"])
    return _rebuild(saved["actor"], saved.get("observation_normalizer"), saved["config"], path, run_dir, dims)


class _StateReceiver:
    """A checkpoint component that only receives the saved state dict (read before the actor exists)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state


def _load_checkpoint(path: Path) -> LoadedPolicy:
    if not Checkpoint.is_checkpoint(path):
        raise ValueError(f"{path} is not a TorchRL checkpoint (no readable manifest): corrupted or wrong path")
    layout = RunDirectory.of_checkpoint(path)
    run_dir, config_path = layout.root, layout.config
    if not config_path.exists():
        raise ValueError(
            f"checkpoint {path} has no {config_path.name} two levels up ({config_path}): cannot rebuild it"
        )
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    for component in path.glob("components/*-actor"):
        verify_tensor_files(component)
    for component in path.glob("components/*-observation_normalizer"):
        verify_tensor_files(component)
    for component in path.glob("components/*-actor_average"):
        verify_tensor_files(component)
    actor, normalizer, average = _StateReceiver(), _StateReceiver(), _StateReceiver()
    try:
        result = Checkpoint(
            actor=actor, observation_normalizer=normalizer, actor_average=average, strict="ignore"
        ).load(path, components=["actor", "observation_normalizer", "actor_average"], map_location="cpu")
    except (CheckpointError, RuntimeError, KeyError, ValueError, OSError) as error:
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    if actor.state is None:
        raise ValueError(f"checkpoint {path} has no actor component (found {sorted(result.unrequested)})")
    actor_state = ActorAverage.deployed_state(
        actor.state, average.state, config["trainer"].get("ema_warmup_updates", 0)
    )
    metadata = Checkpoint.manifest(path).get("metadata", {})
    if not {"obs_dim", "action_dim"} <= metadata.keys():
        raise ValueError(
            f"checkpoint {path} does not record the observation and action sizes (written by an older diffrl)"
        )
    dims = (metadata["obs_dim"], metadata["action_dim"])
    return _rebuild(actor_state, normalizer.state, config, path, run_dir, dims)


def load_policy(path: str | os.PathLike) -> LoadedPolicy:
    """Rebuild the actor and observation normalizer of a training run.

    Args:
        path: a run directory (its ``policy.pt``, else — or when newer, as in a resumed run that has not
            ended — its latest checkpoint), a ``policy.pt``
            file, or a checkpoint directory ``<run_dir>/checkpoints/checkpoint-…`` (the config is
            read from ``<run_dir>/config.yaml``).

    Raises:
        ValueError: a missing, unreadable or inconsistent file, naming it.

    Example:
        >>> load_policy("/nonexistent/run")
        Traceback (most recent call last):
        ...
        ValueError: /nonexistent/run does not exist
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.is_file():
        return _policy_from_file(path, _read_policy_file(path))
    layout = RunDirectory(path)
    if layout.policy.is_file():
        saved = _read_policy_file(layout.policy)
        latest = layout.latest_checkpoint()
        # policy.pt ends a run; a later checkpoint is a resumed run's that has not ended (files before
        # the iteration was recorded have none, and stay the run's policy).
        if latest is not None and RunDirectory.iteration_of(latest) > saved.get("iteration", float("inf")):
            logger.info(
                "%s is of iteration %d, the latest checkpoint %s newer (a resumed run): using the checkpoint",
                layout.policy.name,
                saved["iteration"],
                latest.name,
            )
            return _load_checkpoint(latest)
        return _policy_from_file(layout.policy, saved)
    if layout.checkpoints.is_dir():
        latest = layout.latest_checkpoint()
        if latest is None:
            raise ValueError(
                f"run directory {path} has neither {layout.policy.name} nor a checkpoint in {layout.checkpoints.name}/"
            )
        logger.info("%s has no %s: using its latest checkpoint %s", path, layout.policy.name, latest.name)
        return _load_checkpoint(latest)
    if (path / "components").is_dir() or path.name.startswith(CHECKPOINT_PREFIX):
        return _load_checkpoint(path)
    raise ValueError(
        f"{path} is neither a run directory (no {layout.policy.name}, no {layout.checkpoints.name}/) nor a checkpoint"
    )


def download_policy(run_id: str, tracking_uri: str, destination: str | os.PathLike | None = None) -> Path:
    """Download the ``policy.pt`` artifact of an MLflow run; returns its local path."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    destination = Path(destination) if destination is not None else Path(tempfile.mkdtemp(prefix="diffrl-policy-"))
    destination.mkdir(parents=True, exist_ok=True)
    try:
        local = MlflowClient(tracking_uri).download_artifacts(run_id, POLICY_ARTIFACT, os.fspath(destination))
    except MlflowException as error:
        raise ValueError(f"MLflow run {run_id} in {tracking_uri} has no {POLICY_ARTIFACT} artifact: {error}") from error
    return Path(local)
