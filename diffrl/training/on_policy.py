"""The on-policy loop every recipe shares: collect → GAE → epochs × minibatches.

Built from TorchRL 0.14 parts: ``Collector`` for rollouts, ``GAE`` for advantages,
``KLAdaptiveLR`` for GenPO's / rsl_rl's learning-rate rule, ``VecNormV2`` (made safe for
constant features) for observation normalization, ``RewardSum``/``StepCounter`` for episode statistics and
``torchrl.checkpoint`` for atomic, rotated checkpoints with RNG state. What is written
here is only what those lack: the epoch/minibatch schedule, whole-rollout advantage
normalization, gradient clipping, metrics, the progress bar, exact resume and the
``torchrun`` data parallelism of :mod:`diffrl.training.distributed`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.checkpoint import Checkpoint, CheckpointError, CheckpointRotation
from torchrl.collectors import Collector
from torchrl.envs import Compose, EnvBase, RewardSum, StepCounter, TransformedEnv
from torchrl.objectives import KLAdaptiveLR, LossModule
from torchrl.objectives.value import GAE
from tqdm.auto import tqdm

from diffrl.training import distributed as parallel
from diffrl.training.checkpoint_files import verify_tensor_files
from diffrl.training.distributed import DistributedContext
from diffrl.training.observation_normalizer import ObservationNormalizer
from diffrl.training.rollout_state import RolloutState

logger = logging.getLogger("diffrl.training")

MetricsCallback = Callable[[dict[str, float], int], None]


class TrainingProgress:
    """What a checkpoint must carry so a resumed run continues, never restarts: counters,
    the metrics history (for the learning curve) and the window of recent episodes."""

    def __init__(self) -> None:
        self.iteration = 0
        self.frames = 0
        self.history: list[dict[str, float]] = []
        # rsl_rl reports the mean over the last 100 finished episodes: a smooth, comparable curve.
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.recent_lengths: deque[float] = deque(maxlen=100)

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
        self.recent_returns = deque(state["recent_returns"], maxlen=100)
        self.recent_lengths = deque(state["recent_lengths"], maxlen=100)


class OnPolicyTrainer:
    """PPO-style training of any TorchRL PPO-family loss (GenPO, TruDi, Gaussian PPO).

    Each iteration collects ``steps_per_env`` steps from every env, computes GAE with
    time-out bootstrapping (the env must give the true final observation on a truncated
    step), normalizes advantages over the whole rollout, then runs ``num_epochs`` passes
    of ``num_minibatches`` shuffled minibatches: the sum of the loss's ``loss_*`` terms,
    gradient-norm clipping, and — per minibatch, as in GenPO and rsl_rl — the
    KL-adaptive learning rate fed with the loss's ``kl_approx``.

    Checkpoints hold everything a run needs to continue as if never stopped: networks,
    optimizer, learning-rate rule, observation statistics, counters and history, and the
    :class:`~diffrl.training.rollout_state.RolloutState` (random generators, the collector's
    carried step, the simulator's state where the env exposes one). On a CPU with a MuJoCo
    env a resumed run reproduces the uninterrupted run's metrics exactly.

    Under ``torchrun`` (``distributed`` with ``world_size > 1``) every rank runs this loop on
    its own envs; see :mod:`diffrl.training.distributed` for what is synchronized.
    ``total_frames`` and the reported ``frames`` count all ranks' frames.

    Args:
        env: a batched TorchRL env (batch size [num_envs]).
        actor: the policy module (its ``in_keys[0]`` is the observation key normalized).
        critic: the value module.
        loss_module: the loss; its ``loss_*`` outputs are summed.
        total_frames: stop after this many env steps (counted over all envs).
        steps_per_env: rollout length per env per iteration (GenPO Ant: 32).
        num_epochs, num_minibatches: the update schedule (GenPO: 5 × 4).
        learning_rate: initial Adam learning rate (GenPO: 5e-4).
        adaptive_lr: adapt the lr to ``desired_kl`` (``KLAdaptiveLR``); else keep it fixed.
        desired_kl, lr_factor, min_lr, max_lr: the adaptive rule (GenPO: 0.01, 1.5, 1e-5, 1e-2).
        gamma, lmbda: GAE discount and λ (GenPO: 0.99, 0.95).
        max_grad_norm: global gradient-norm clip (GenPO: 1.0).
        normalize_advantage: standardize advantages over the rollout.
        normalize_observations: a running :class:`ObservationNormalizer` (``VecNormV2``) on the
            observation, saved in checkpoints.
        checkpoint_dir: where rotated checkpoints go (``None``: no checkpoints).
        checkpoint_every: iterations between checkpoints (a final one is always written).
        keep_checkpoints: how many recent checkpoints to keep.
        on_metrics: called with ``(metrics, iteration)`` after every iteration (e.g. MLflow),
            on rank 0 only.
        progress: show a tqdm progress bar (rank 0 only).
        distributed: this process's place in a ``torchrun`` launch (``None``: a single process).
    """

    def __init__(
        self,
        *,
        env: EnvBase,
        actor: TensorDictModuleBase,
        critic: TensorDictModuleBase,
        loss_module: LossModule,
        total_frames: int,
        steps_per_env: int = 32,
        num_epochs: int = 5,
        num_minibatches: int = 4,
        learning_rate: float = 5e-4,
        adaptive_lr: bool = True,
        desired_kl: float = 0.01,
        lr_factor: float = 1.5,
        min_lr: float = 1e-5,
        max_lr: float = 1e-2,
        gamma: float = 0.99,
        lmbda: float = 0.95,
        max_grad_norm: float = 1.0,
        normalize_advantage: bool = True,
        normalize_observations: bool = True,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 50,
        keep_checkpoints: int = 3,
        on_metrics: MetricsCallback | None = None,
        progress: bool = True,
        distributed: DistributedContext | None = None,
    ) -> None:
        if env.batch_size.numel() < 1 or len(env.batch_size) != 1:
            raise ValueError(f"OnPolicyTrainer needs a batched env with batch size [num_envs], got {env.batch_size}")
        if steps_per_env < 1 or num_epochs < 1 or num_minibatches < 1 or total_frames < 1:
            raise ValueError("steps_per_env, num_epochs, num_minibatches and total_frames must all be >= 1")
        self.num_envs = env.batch_size[0]
        self.frames_per_batch = self.num_envs * steps_per_env
        if self.frames_per_batch < num_minibatches:
            raise ValueError(
                f"{self.frames_per_batch} frames per batch cannot be split into {num_minibatches} minibatches"
            )
        observation_key = actor.in_keys[0]
        # Recorded in checkpoints, so that a policy can be rebuilt from one (diffrl.deploy).
        self._sizes = {
            "obs_dim": env.observation_spec[observation_key].shape[-1],
            "action_dim": env.action_spec.shape[-1],
        }
        transforms = [RewardSum(), StepCounter()]
        self.observation_normalizer = None
        if normalize_observations:
            self.observation_normalizer = ObservationNormalizer.for_key(observation_key)
            transforms.insert(0, self.observation_normalizer)
        self.env = TransformedEnv(env, Compose(*transforms))
        self.actor, self.critic, self.loss_module = actor, critic, loss_module
        self.total_frames = total_frames
        self.num_epochs, self.num_minibatches = num_epochs, num_minibatches
        self.max_grad_norm = max_grad_norm
        self.normalize_advantage = normalize_advantage
        self.advantage_module = GAE(gamma=gamma, lmbda=lmbda, value_network=critic, average_gae=False)
        self.optimizer = torch.optim.Adam(loss_module.parameters(), lr=learning_rate)
        self.lr_schedule = (
            KLAdaptiveLR(self.optimizer, desired_kl, factor=lr_factor, min_lr=min_lr, max_lr=max_lr)
            if adaptive_lr
            else None
        )
        self.context = distributed or DistributedContext()
        if self.context.is_distributed:
            parallel.broadcast_parameters(loss_module)
        self._shared_statistics = None  # the observation statistics all ranks agreed on last
        self.progress = TrainingProgress()
        self.on_metrics = on_metrics
        self.show_progress = progress and self.context.is_main
        # Made here, not in train(): its first env reset must precede a checkpoint's restore.
        self.collector = Collector(
            self.env,
            self.actor,
            frames_per_batch=self.frames_per_batch,
            total_frames=-1,
            auto_register_policy_transforms=False,
        )
        self.rollout_state = RolloutState(
            self.collector, getattr(env, "simulator_state", None), self.context.rank, self.context.world_size
        )
        self.checkpoint = Checkpoint(
            actor=actor,
            critic=critic,
            optimizer=self.optimizer,
            progress=self.progress,
            rollout=self.rollout_state,
            **({"lr_schedule": self.lr_schedule} if self.lr_schedule is not None else {}),
            **({"observation_normalizer": self.observation_normalizer} if normalize_observations else {}),
        )
        self.checkpoints = (
            CheckpointRotation(checkpoint_dir, keep_last=keep_checkpoints) if checkpoint_dir is not None else None
        )
        self.checkpoint_every = checkpoint_every

    # -- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, gather_ranks: bool = True) -> Path | None:
        """Write a checkpoint (atomically; old ones rotated) and return its path (rank 0; others ``None``).

        Every rank must call it (its rollout state is gathered) unless ``gather_ranks`` is
        false, as after a crash, when rank 0 saves only its own.
        """
        if self.checkpoints is None:
            return None
        local = self.rollout_state.capture()
        if self.context.is_distributed and gather_ranks:
            self.rollout_state.ranks = parallel.gather_objects(local, self.context.world_size)
        else:
            self.rollout_state.ranks = [local]
        if not self.context.is_main:
            return None
        path = self.checkpoints.save(
            self.checkpoint, step=self.progress.iteration, metadata={"frames": self.progress.frames, **self._sizes}
        )
        logger.info("checkpoint written: %s", path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything needed to continue: networks, optimizer, lr, normalizer, counters, RNG.

        A missing, corrupted or incompatible checkpoint is a :class:`ValueError` naming the
        file and what is wrong.
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
        if self.context.is_distributed and self.observation_normalizer is not None:
            self._shared_statistics = self.observation_normalizer.statistics()
        logger.info("resumed from %s at iteration %d, %d frames", path, self.progress.iteration, self.progress.frames)

    # -- the loop ------------------------------------------------------------------------------

    def train(self) -> list[dict[str, float]]:
        """Run until ``total_frames``; return every iteration's metrics, resumed ones included.

        A crash or Ctrl-C writes a checkpoint of the last completed iteration before the
        exception propagates, so nothing but the iteration in progress is lost.
        """
        bar = tqdm(
            total=self.total_frames,
            initial=self.progress.frames,
            unit="frames",
            unit_scale=True,
            disable=not self.show_progress,
            dynamic_ncols=True,
        )
        completed_since_save = 0
        try:
            collect_start = time.perf_counter()
            rollouts = iter(self.collector)
            # The budget is checked before collecting: a rollout past it would move the envs,
            # the statistics and the random streams away from what the checkpoint records.
            while self.progress.frames < self.total_frames:
                batch = next(rollouts)
                collect_time = time.perf_counter() - collect_start
                update_start = time.perf_counter()
                metrics = self._update(batch)
                update_time = time.perf_counter() - update_start
                frames = batch.numel() * self.context.world_size
                self.progress.iteration += 1
                self.progress.frames += frames
                completed_since_save += 1
                metrics.update(
                    frames=float(self.progress.frames),
                    frames_per_second=frames / (collect_time + update_time),
                    collection_time=collect_time,
                    update_time=update_time,
                    learning_rate=float(self.optimizer.param_groups[0]["lr"]),
                )
                self.progress.history.append(metrics)
                if self.on_metrics is not None and self.context.is_main:
                    self.on_metrics(metrics, self.progress.iteration)
                bar.update(frames)
                summary = _progress_summary(metrics)
                bar.set_postfix(summary, refresh=False)
                if not self.show_progress and self.context.is_main:  # logs still show the run's progress
                    logger.info(
                        "iteration %d, %d frames: %s",
                        self.progress.iteration,
                        self.progress.frames,
                        ", ".join(f"{key} {value}" for key, value in summary.items()),
                    )
                if self.progress.iteration % self.checkpoint_every == 0:
                    self.save_checkpoint()
                    completed_since_save = 0
                collect_start = time.perf_counter()
            if completed_since_save:  # before shutdown: the collector's carried step is saved too
                self.save_checkpoint()
                completed_since_save = 0
        except BaseException:
            if completed_since_save:
                logger.warning("training interrupted: saving a checkpoint of the last completed iteration")
                self.save_checkpoint(gather_ranks=False)  # the other ranks may be gone
            raise
        finally:
            bar.close()
            self.collector.shutdown(close_env=False)  # the env belongs to the caller
        return self.progress.history

    def _update(self, batch: TensorDictBase) -> dict[str, float]:
        if self.context.is_distributed and self.observation_normalizer is not None:
            self._synchronize_observation_statistics()
        metrics = self._episode_metrics(batch)
        with torch.no_grad():
            self.advantage_module(batch)
        flat = batch.reshape(-1)
        if self.normalize_advantage:
            flat["advantage"] = self._normalized_advantage(flat["advantage"])
        sums: dict[str, torch.Tensor] = {}
        grad_norms = []
        minibatch_size = flat.numel() // self.num_minibatches
        for _ in range(self.num_epochs):
            order = torch.randperm(flat.numel(), device=flat.device)
            for index in range(self.num_minibatches):
                minibatch = flat[order[index * minibatch_size : (index + 1) * minibatch_size]]
                out = self.loss_module(minibatch)
                if self.lr_schedule is not None:
                    kl = out["kl_approx"].detach()
                    if self.context.is_distributed:
                        kl = parallel.all_reduce_sum(kl) / self.context.world_size
                    self.lr_schedule.step(kl)
                loss = sum(value for key, value in out.items() if key.startswith("loss_"))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.context.is_distributed:
                    parallel.average_gradients(list(self.loss_module.parameters()), self.context.world_size)
                grad_norms.append(torch.nn.utils.clip_grad_norm_(self.loss_module.parameters(), self.max_grad_norm))
                self.optimizer.step()
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
        count = self.num_epochs * self.num_minibatches
        metrics.update({key: float(value) / count for key, value in sums.items()})
        metrics["grad_norm"] = float(torch.stack(grad_norms).mean())
        metrics["reward_per_step"] = float(batch["next", "reward"].mean())
        if self.context.is_distributed:
            metrics = parallel.all_reduce_mean(metrics, self.context.world_size)
        return metrics

    def _normalized_advantage(self, advantage: torch.Tensor) -> torch.Tensor:
        """Standardized with the mean and (unbiased) std of the whole rollout, over all ranks."""
        wide = advantage.double()
        moments = torch.stack([wide.sum(), wide.pow(2).sum(), wide.new_tensor(advantage.numel())])
        if self.context.is_distributed:
            moments = parallel.all_reduce_sum(moments)
        total, total_squares, count = moments.unbind()
        mean = total / count
        # Round-off can push the sum formula a hair below zero for a constant advantage.
        std = ((total_squares - count * mean**2) / (count - 1)).clamp_min(0).sqrt()
        return ((advantage - mean) / std.clamp_min(1e-8)).to(advantage.dtype)

    def _synchronize_observation_statistics(self) -> None:
        """Every rank adopts the statistics of all ranks' observations so far."""
        merged = parallel.merge_normalizer_statistics(self.observation_normalizer.statistics(), self._shared_statistics)
        self.observation_normalizer.load_statistics(*merged)
        self._shared_statistics = merged

    def _episode_metrics(self, batch: TensorDictBase) -> dict[str, float]:
        """Mean return and length over the last 100 finished episodes (NaN before the first one ends)."""
        done = batch["next", "done"].squeeze(-1)
        returns, lengths = self.progress.recent_returns, self.progress.recent_lengths
        returns.extend(batch["next", "episode_reward"].squeeze(-1)[done].tolist())
        lengths.extend(batch["next", "step_count"].squeeze(-1)[done].tolist())
        if not returns:
            return {"episode_return": math.nan, "episode_length": math.nan, "episodes_finished": 0.0}
        return {
            "episode_return": sum(returns) / len(returns),
            "episode_length": sum(lengths) / len(lengths),
            "episodes_finished": float(done.sum()),
        }


def _progress_summary(metrics: dict[str, Any]) -> dict[str, str]:
    return {
        "return": f"{metrics['episode_return']:.3g}",
        "fps": f"{metrics['frames_per_second']:.0f}",
        "kl": f"{metrics.get('kl_approx', math.nan):.2g}",
        "lr": f"{metrics['learning_rate']:.1e}",
    }
