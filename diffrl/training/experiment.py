"""One training run from a Hydra config: env, modules, loss, trainer, MLflow, checkpoints, resume.

Recipes (``recipes/*.py``) are thin Hydra entry points over :func:`run_experiment`; a user
script can call it with any ``DictConfig`` of the same layout (see ``recipes/config``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchrl.envs import EnvBase

from diffrl.envs.training_env import make_env, observation_normalizer, training_env
from diffrl.training.compilation import compile_networks
from diffrl.training.distributed import DistributedContext, broadcast_object, init_distributed
from diffrl.training.learning_curve import plot_learning_curve
from diffrl.training.on_policy import OnPolicyTrainer
from diffrl.training.run_directory import RunDirectory, checkpoint_to_resume
from diffrl.training.run_lock import RunLock
from diffrl.training.run_state import TrainingProgress
from diffrl.training.tracking import (
    MLflowTracker,
    default_tracking_uri,
    flatten_config,
    recorded_run,
    require_tracking_server,
    write_run_info,
)
from diffrl.training.update_rule import minibatch_size

logger = logging.getLogger("diffrl.training")


@dataclass
class RunResult:
    """What a finished run leaves behind."""

    run_dir: Path
    mlflow_run_id: str
    tracking_uri: str
    history: list[dict[str, float]]
    final_checkpoint: Path | None


def _check_device(device: str) -> None:
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"env.device={device!r} is not a torch device: {error}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"env.device={device!r} but no CUDA device is available here; use env.device=cpu")


_POSITIVE_COUNTS = (
    "env.num_envs",
    "collector.steps_per_env",
    "collector.total_frames",
    "checkpoint.every",
    "checkpoint.keep",
    "trainer.num_epochs",
    "trainer.num_minibatches",
)


def _check_counts(cfg: DictConfig) -> None:
    """The numbers a run needs are integers of the right sign, and a rollout holds at least one sample per
    minibatch: one line naming the setting, before anything is built."""

    def integer(key: str) -> Any:
        value = OmegaConf.select(cfg, key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    for key in _POSITIVE_COUNTS:
        value = integer(key)
        if value is None or value < 1:
            raise ValueError(f"{key}={OmegaConf.select(cfg, key)!r}: must be a positive integer")
    if integer("seed") is None:
        raise ValueError(f"seed={cfg.seed!r}: must be an integer")
    if cfg.torch_threads is not None and (integer("torch_threads") is None or cfg.torch_threads < 1):
        raise ValueError(f"torch_threads={cfg.torch_threads!r}: must be a positive integer or null")
    minibatch_size(cfg.env.num_envs * cfg.collector.steps_per_env, cfg.trainer.num_minibatches)


# What a resumed run may set anew, as patterns over the dotted keys: how long and how it runs, not what it learns.
RESUMABLE_SETTINGS = (
    "resume",
    "collector.total_frames",
    "checkpoint.*",
    "logger.progress",
    "torch_threads",
    "compile",
    "cudagraphs",
    "check_numerics",
)


def _check_resumed_settings(cfg: DictConfig, layout: RunDirectory) -> None:
    """A resumed run continues with the settings it was trained with (its ``config.yaml``): an override
    of any other setting would be silently shadowed by the checkpoint's state (the adaptive learning
    rate) or make the continued run differ from an uninterrupted one, so it is refused, by name."""
    if not layout.config.exists():
        return
    stored = flatten_config(OmegaConf.to_container(OmegaConf.load(layout.config), resolve=True))
    current = flatten_config(OmegaConf.to_container(cfg, resolve=True))
    changed = [
        f"{key}={current[key]} (trained with {stored[key]})"
        for key in sorted(stored.keys() & current.keys())
        if stored[key] != current[key] and not any(fnmatch.fnmatchcase(key, setting) for setting in RESUMABLE_SETTINGS)
    ]
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise ValueError(
            f"resume={cfg.resume}: a resumed run continues with its own settings, and these differ from "
            f"{layout.config}: {shown}; a resume may change only {', '.join(RESUMABLE_SETTINGS[1:])}. "
            "To train with other settings, start a new run"
        )


class StopRequested(KeyboardInterrupt):
    """A signal (SIGTERM) asked the run to stop: handled as Ctrl-C is, and remembered for the exit status."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


def _raise_stop_requested(signum: int, frame: Any) -> None:
    raise StopRequested(signum)


def run_experiment(cfg: DictConfig, run_dir: str | Path) -> RunResult:
    """Train as ``cfg`` says, tracking into MLflow and checkpointing under ``run_dir``.

    With ``cfg.resume`` set to a checkpoint, networks, optimizer, learning rate, observation
    statistics, counters and RNG state are restored and the same MLflow run continues.
    SIGTERM is treated like Ctrl-C: the last completed iteration is checkpointed and the
    MLflow run is closed as ``KILLED``.

    Under ``torchrun`` every rank runs this function: rank r steps ``env.num_envs`` envs of
    its own seeded ``seed + r·num_envs`` and draws its own noise from generators seeded the same
    (on ``cuda:<local rank>`` for a CUDA device); rank 0's run directory is used, and only rank 0
    writes files and tracks to MLflow.
    """
    _check_device(cfg.env.device)
    _check_counts(cfg)
    context = init_distributed(cfg.env.device)
    run_dir = Path(broadcast_object(str(run_dir)) if context.is_distributed else run_dir)
    resume = checkpoint_to_resume(cfg.resume) if cfg.resume else None
    if resume is not None:
        run_dir = RunDirectory.of_checkpoint(resume).root
        _check_resumed_settings(cfg, RunDirectory(run_dir))
    # The MLflow run a resumed run continues (rank 0 tracks alone).
    recorded = recorded_run(RunDirectory(run_dir)) if resume is not None and context.is_main else None
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    if context.is_main and (cfg.logger.tracking_uri or recorded is not None):
        require_tracking_server(cfg.logger.tracking_uri or recorded[0])
    # Rank 0 owns the directory for the run's life; a fresh run refuses another run's files.
    lock = RunLock(RunDirectory(run_dir), resuming=resume is not None).acquire() if context.is_main else None
    try:
        # Each rank its own envs, exploration noise and minibatch order; the weights are rank 0's (broadcast).
        seed = rank_seed(cfg.seed, context.rank, cfg.env.num_envs)
        seed_everything(seed)
        env = make_env(cfg.env, seed, device=context.device(cfg.env.device))
        try:  # a bad checkpoint or module config must not leave the (process-wide) simulation open
            return _train(cfg, env, run_dir, resume, recorded, context)
        finally:
            env.close()
    finally:
        if lock is not None:
            lock.release()


def rank_seed(seed: int, rank: int, num_envs: int) -> int:
    """The seed of rank ``rank``'s envs and generators, ``seed + rank·num_envs`` (rank 0's is the run's).

    A gymnasium vector env seeds its copy i with seed + i: ranks seeded seed + rank would replay each
    other's copies, so each rank takes the next ``num_envs`` seeds.
    """
    return seed + rank * num_envs


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's global generator and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _train(
    cfg: DictConfig,
    env: EnvBase,
    run_dir: Path,
    resume: Path | None,
    recorded: tuple[str, str] | None,
    context: DistributedContext,
) -> RunResult:
    observation_key = cfg.env.observation_key
    env = training_env(
        env, observation_key=observation_key, normalize_observations=cfg.algorithm.normalize_observations
    )
    obs_dim = env.observation_spec[observation_key].shape[-1]
    action_dim = env.action_spec.shape[-1]
    actor = instantiate(
        cfg.algorithm.actor,
        observation_key=observation_key,
        **actor_dimensions(cfg.algorithm.actor, obs_dim, action_dim),
    ).to(env.device)
    # A Q critic (the pathwise family) declares `action_dim` (null) in its config for the env to fill in.
    critic_sizes = {"obs_dim": obs_dim, **({"action_dim": action_dim} if "action_dim" in cfg.algorithm.critic else {})}
    critic = instantiate(cfg.algorithm.critic, observation_key=observation_key, **critic_sizes).to(env.device)
    loss_module = instantiate(cfg.algorithm.loss, actor_network=actor, critic_network=critic)
    if cfg.compile:
        logger.info("compiled %d networks (torch.compile, dynamic batch)", compile_networks(loss_module))
    # Partial: Hydra would turn the DistributedContext dataclass into a config node.
    update = instantiate(cfg.trainer, _partial_=True)(loss_module=loss_module, distributed=context)
    layout = RunDirectory(run_dir)
    trainer = OnPolicyTrainer(
        env=env,
        update=update,
        total_frames=cfg.collector.total_frames,
        steps_per_env=cfg.collector.steps_per_env,
        checkpoint_dir=layout.checkpoints,
        checkpoint_every=cfg.checkpoint.every,
        keep_checkpoints=cfg.checkpoint.keep,
        progress=cfg.logger.progress,
        distributed=context,
        check_numerics=cfg.check_numerics,
        cudagraph_policy=cfg.cudagraphs,
        identity={"algorithm": cfg.algorithm.name, "task": cfg.env.task},
    )
    if resume is not None:
        trainer.load_checkpoint(resume)
        aside = layout.set_aside_later_than(layout.iteration_of(resume)) if context.is_main else None
        if aside is not None:
            logger.warning("resuming from %s starts a new branch: what came after it moved to %s", resume.name, aside)
    tracker = _start_tracking(cfg, env, run_dir, resume, recorded, trainer.progress) if context.is_main else None
    if tracker is not None:
        trainer.on_metrics = tracker.log_metrics

    previous_handler = signal.signal(signal.SIGTERM, _raise_stop_requested)
    try:
        history = trainer.train()
    except KeyboardInterrupt:
        if tracker is not None:
            tracker.finish("KILLED")
        raise
    except BaseException:
        if tracker is not None:
            tracker.finish("FAILED")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_handler)

    final_checkpoint = trainer.run_state.latest()
    if tracker is None:
        return RunResult(run_dir, "", "", history, final_checkpoint)
    curve = plot_learning_curve(history, layout.learning_curve, title=f"{cfg.algorithm.name} on {cfg.env.task}")
    policy_path = save_policy(
        layout.policy,
        update.deployed_actor,
        observation_normalizer(env),
        cfg,
        obs_dim,
        action_dim,
        iteration=trainer.progress.iteration,
    )
    for artifact in (curve, policy_path):
        tracker.log_artifact(artifact)
    if final_checkpoint is not None:
        tracker.log_artifact(final_checkpoint, artifact_path=f"checkpoints/{final_checkpoint.name}")
    tracker.finish()
    logger.info("run finished: %s (MLflow: mlflow ui --backend-store-uri %s)", run_dir, tracker.tracking_uri)
    return RunResult(run_dir, tracker.run_id, tracker.tracking_uri, history, final_checkpoint)


def _start_tracking(
    cfg: DictConfig,
    env: EnvBase,
    run_dir: Path,
    resume: Path | None,
    recorded: tuple[str, str] | None,
    progress: TrainingProgress,
) -> MLflowTracker:
    """Open (or, on resume, reopen) the run's MLflow run and record the config; rank 0 only."""
    layout = RunDirectory(run_dir)
    recorded_uri, recorded_run_id = recorded if recorded is not None else (None, None)
    tracking_uri = cfg.logger.tracking_uri or recorded_uri or default_tracking_uri(run_dir)
    tracker = MLflowTracker(
        tracking_uri,
        experiment=cfg.logger.experiment,
        run_name=f"{cfg.algorithm.name}-{cfg.env.task}-seed{cfg.seed}",
        run_id=recorded_run_id,
        artifact_location=artifact_location(cfg.logger.artifact_root, tracking_uri, layout),
        buffer_path=layout.metrics_buffer,
        fallback_uri=default_tracking_uri(run_dir) if cfg.logger.tracking_uri else None,
        resume_iteration=progress.iteration if resume is not None else None,
    )
    write_run_info(layout, tracker.run_id, tracking_uri)
    config_path = layout.config
    config_path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    assets = getattr(env, "isaaclab_assets", None)
    if resume is not None:  # a new run carries the whole curve up to the checkpoint, the continued one its gaps
        tracker.log_history(progress.history)
    if resume is None or tracker.replaced_run_id is not None:
        tracker.log_params(OmegaConf.to_container(cfg, resolve=True))
        if assets is not None:  # official or offline, and how each stand-in and config change differs
            tracker.log_params({"assets": dataclasses.asdict(assets)})
        tracker.log_artifact(config_path)
    tracker.set_tags(_env_tags(env, cfg))
    return tracker


def artifact_location(artifact_root: str | None, tracking_uri: str, layout: RunDirectory) -> str | None:
    """The artifact location of a new experiment: the user's root, else beside the sqlite store
    (the run directory's own one included), else the server's default (``None``).

    MLflow's own default for a sqlite store is ``./mlruns``, relative to the working directory of
    whichever process created the experiment.

    Example:
        >>> artifact_location(None, "sqlite:////data/mlflow.db", RunDirectory("/runs/x"))
        'file:///data/mlartifacts'
        >>> artifact_location("/big/disk", "http://mlflow:5000", RunDirectory("/runs/x"))
        'file:///big/disk'
    """
    if artifact_root:
        return Path(artifact_root).expanduser().resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        return (database.parent / layout.mlflow_artifacts.name).as_uri()
    return None


def save_policy(
    path: Path,
    actor: torch.nn.Module,
    observation_normalizer: torch.nn.Module | None,
    cfg: DictConfig,
    obs_dim: int,
    action_dim: int,
    iteration: int,
) -> Path:
    """Write ``policy.pt`` (atomically): what :func:`diffrl.deploy.policy_loading.load_policy` rebuilds a
    policy from, with the iteration it ends (a resumed run's newer checkpoints take precedence over it)."""
    staged = path.with_name(f".{path.name}.staged")
    torch.save(
        {
            "actor": actor.state_dict(),
            "observation_normalizer": observation_normalizer.state_dict()
            if observation_normalizer is not None
            else None,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "obs_dim": obs_dim,
            "action_dim": action_dim,
            "iteration": iteration,
        },
        staged,
    )
    staged.replace(path)
    return path


def actor_dimensions(actor_cfg: DictConfig, obs_dim: int, action_dim: int) -> dict[str, Any]:
    """The env's sizes, passed where the actor config builds its sampler: the one nested ``_target_``
    (a GenPO flow, a denoising chain), else the actor itself (the Gaussian actor)."""
    sizes = {"action_dim": action_dim, "obs_dim": obs_dim}
    samplers = [key for key, value in actor_cfg.items() if isinstance(value, DictConfig) and "_target_" in value]
    if len(samplers) > 1:
        raise ValueError(f"the actor config has several nested modules {samplers}: cannot tell which one samples")
    return {samplers[0]: sizes} if samplers else sizes


def _env_tags(env: EnvBase, cfg: DictConfig) -> dict[str, str]:
    tags = {"task": cfg.env.task, "backend": cfg.env.backend, "device": cfg.env.device}
    assets = getattr(env, "isaaclab_assets", None)
    if assets is not None:  # official assets or offline stand-ins: always on record
        tags["assets"] = assets.source
        tags["asset_root"] = assets.root
    return tags
