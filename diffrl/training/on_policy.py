"""The loop every recipe shares: env → collector → actor → update rule → run state → logger.

It knows nothing of the algorithm: an :class:`~diffrl.training.update_rule.UpdateRule` brings the
actor and turns each rollout into new parameters (the PPO family: :class:`~diffrl.training.ppo_update.PPOUpdate`;
the pathwise family: :class:`~diffrl.training.pathwise_update.PathwiseUpdate`).
What the loop owns is the order of things, the frame budget, episode statistics, the progress bar,
checkpoints (:class:`~diffrl.training.run_state.RunState`), the observation statistics shared across
``torchrun`` ranks and the once-per-iteration inspection of the deferred numerical checks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, TransformedEnv
from tqdm.auto import tqdm

from diffrl.envs.training_env import (
    EPISODE_LENGTH_KEY,
    EPISODE_RETURN_KEY,
    has_episode_statistics,
    observation_normalizer,
)
from diffrl.numerics import NumericsMonitor
from diffrl.training import distributed as parallel
from diffrl.training.distributed import DistributedContext
from diffrl.training.rollout_state import RolloutState
from diffrl.training.run_state import RunState, TrainingProgress
from diffrl.training.update_rule import UpdateRule

logger = logging.getLogger("diffrl.training")

MetricsCallback = Callable[[dict[str, float], int], None]


class OnPolicyTrainer:
    """Collect ``steps_per_env`` steps from every env, hand the rollout to ``update``, repeat until ``total_frames``.

    Each iteration is: one rollout from TorchRL's ``Collector``; the deferred numerical checks of the
    rollout (every reward and every observation the actor saw is finite, the actor's own checks)
    inspected; the observation statistics merged across ranks; the update; then one host transfer
    of all metrics, the progress bar, the ``on_metrics`` callback and, every ``checkpoint_every``
    iterations, a checkpoint. On a CPU with a MuJoCo env a resumed run reproduces the uninterrupted
    run's metrics exactly (:class:`~diffrl.training.rollout_state.RolloutState`).

    Under ``torchrun`` (``distributed`` with ``world_size > 1``) every rank runs this loop on its own
    envs (see :mod:`diffrl.training.distributed`); ``total_frames`` and ``frames`` count all ranks.

    Args:
        env: the training env, :func:`diffrl.envs.training_env` of a batched env (it writes the
            episode return and length; its observation normalizer, if any, is checkpointed).
        update: the update rule (its ``actor`` collects).
        total_frames: stop after this many env steps (counted over all envs and ranks).
        steps_per_env: rollout length per env per iteration (GenPO Ant: 32).
        checkpoint_dir: where rotated checkpoints go (``None``: no checkpoints).
        checkpoint_every: iterations between checkpoints (a final one is always written).
        keep_checkpoints: how many recent checkpoints to keep.
        on_metrics: called with ``(metrics, iteration)`` after every iteration (e.g. MLflow), rank 0 only.
        progress: show a tqdm progress bar (rank 0 only).
        distributed: this process's place in a ``torchrun`` launch (``None``: a single process).
        check_numerics: check rollouts, actor and loss for NaN/inf (deferred: one host sync per
            rollout and per update); ``False`` skips the checks.
        compile_policy, cudagraph_policy: passed to TorchRL's ``Collector`` (``torch.compile`` of the
            collecting policy; CUDA-graph capture of it, CUDA only).
        identity: what the run is, recorded in its checkpoints (``{"algorithm": ..., "task": ...}``):
            resuming a checkpoint of another identity is refused by name.

    Example:
        >>> from torchrl.objectives import ClipPPOLoss
        >>> from diffrl.envs import make_gym_env, training_env
        >>> from diffrl.modules import GaussianActor, make_value_network
        >>> from diffrl.training import PPOUpdate
        >>> env = training_env(make_gym_env("HalfCheetah-v5", 4, max_episode_steps=8), normalize_observations=False)
        >>> actor, critic = GaussianActor(6, 17, [16]), make_value_network(17, [16])
        >>> update = PPOUpdate(ClipPPOLoss(actor, critic), num_epochs=1, num_minibatches=2)
        >>> history = OnPolicyTrainer(env=env, update=update, total_frames=64, steps_per_env=8, progress=False).train()
        >>> [entry["frames"] for entry in history], history[-1]["episode_length"]
        ([32.0, 64.0], 8.0)
    """

    def __init__(
        self,
        *,
        env: EnvBase,
        update: UpdateRule,
        total_frames: int,
        steps_per_env: int = 32,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 50,
        keep_checkpoints: int = 3,
        on_metrics: MetricsCallback | None = None,
        progress: bool = True,
        distributed: DistributedContext | None = None,
        check_numerics: bool = True,
        compile_policy: bool = False,
        cudagraph_policy: bool = False,
        identity: dict[str, str] | None = None,
    ) -> None:
        if not has_episode_statistics(env):
            raise ValueError(
                "the env does not write the episode return and length: build it with diffrl.envs.training_env(env)"
            )
        if steps_per_env < 1 or total_frames < 1 or checkpoint_every < 1:
            raise ValueError(
                f"steps_per_env, total_frames and checkpoint_every must be >= 1, got {steps_per_env}, "
                f"{total_frames}, {checkpoint_every}"
            )
        self.env, self.update = env, update
        self.num_envs = env.batch_size[0]
        self.frames_per_batch = self.num_envs * steps_per_env
        self.total_frames = total_frames
        self.checkpoint_every = checkpoint_every
        self.on_metrics = on_metrics
        self.context = distributed or DistributedContext()
        self.show_progress = progress and self.context.is_main
        self.numerics = update.numerics
        self.numerics.mode = "deferred" if check_numerics else "off"
        if hasattr(update.actor, "numerics"):
            # Its checks are the loop's rollout checks (observations, actions, log-probs, rewards), done
            # after collection: nothing in the (possibly compiled) policy records or branches.
            update.actor.numerics = NumericsMonitor("off")
        self.observation_key = update.actor.in_keys[0]
        self._actor_outputs = list(update.actor.out_keys)
        self.observation_normalizer = observation_normalizer(env)
        if self.observation_normalizer is not None:  # raw observations, named by env before normalization
            self.observation_normalizer.numerics = self.numerics
        self._shared_statistics = None  # the observation statistics all ranks agreed on last
        # Made here, not in train(): its first env reset must precede a checkpoint's restore.
        self.collector = Collector(
            env,
            update.actor,
            frames_per_batch=self.frames_per_batch,
            total_frames=-1,
            auto_register_policy_transforms=False,
            # Trajectory ids are unused here, and updating them tests done.any() on the host every step.
            track_traj_ids=False,
            compile_policy=compile_policy or None,
            cudagraph_policy=cudagraph_policy or None,
        )
        base_env = env.base_env if isinstance(env, TransformedEnv) else env
        rollout_state = RolloutState(
            self.collector,
            getattr(base_env, "simulator_state", None),
            self.context.rank,
            self.context.world_size,
            episode_components=update.episode_components(),
        )
        components = dict(update.checkpoint_components())
        if self.observation_normalizer is not None:
            components["observation_normalizer"] = self.observation_normalizer
        sizes = {
            "obs_dim": env.observation_spec[self.observation_key].shape[-1],
            "action_dim": env.action_spec.shape[-1],
        }
        self.run_state = RunState(
            components,
            rollout_state,
            sizes=sizes,
            identity=identity,
            checkpoint_dir=checkpoint_dir,
            keep_checkpoints=keep_checkpoints,
            distributed=self.context,
        )

    @property
    def progress(self) -> TrainingProgress:
        return self.run_state.progress

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue from a checkpoint: networks, optimizer, learning rate, normalizer, counters, RNG."""
        self.run_state.load(path)
        if self.context.is_distributed and self.observation_normalizer is not None:
            self._shared_statistics = self.observation_normalizer.statistics()

    def train(self) -> list[dict[str, float]]:
        """Run until ``total_frames``; return every iteration's metrics, resumed ones included.

        A crash, Ctrl-C or SIGTERM checkpoints the last *completed* iteration exactly as it ended
        (:meth:`RunState.mark_boundary <diffrl.training.run_state.RunState.mark_boundary>`), not the
        iteration in progress, and re-raises the original exception: resuming from that checkpoint
        continues as if the run had never stopped.
        """
        progress = self.progress
        bar = tqdm(
            total=self.total_frames,
            initial=progress.frames,
            unit="frames",
            unit_scale=True,
            disable=not self.show_progress,
            dynamic_ncols=True,
        )
        try:
            rollouts = iter(self.collector)
            # The budget is checked before collecting: a rollout past it would move the envs,
            # the statistics and the random streams away from what the checkpoint records.
            while progress.frames < self.total_frames:
                collect_start = time.perf_counter()
                batch = next(rollouts)
                self._check_rollout(batch)
                if self.context.is_distributed and self.observation_normalizer is not None:
                    self._synchronize_observation_statistics()
                episodes = self._episode_metrics(batch)
                update_start = time.perf_counter()
                metrics = self._to_host(self.update.update(batch), batch, episodes)
                update_time = time.perf_counter() - update_start
                collect_time = update_start - collect_start
                frames = batch.numel() * self.context.world_size
                progress.iteration += 1
                progress.frames += frames
                metrics = {
                    **metrics,
                    "frames": float(progress.frames),
                    "frames_per_second": frames / (collect_time + update_time),
                    "collection_time": collect_time,
                    "update_time": update_time,
                }
                progress.history.append(metrics)
                self.run_state.mark_boundary()
                if self.on_metrics is not None and self.context.is_main:
                    self.on_metrics(metrics, progress.iteration)
                self._show(bar, metrics, frames)
                if progress.iteration % self.checkpoint_every == 0:
                    self.run_state.save()
            if self.run_state.saved_iteration != progress.iteration:  # before shutdown: the carried step too
                self.run_state.save()
        except BaseException:
            if self.run_state.save_boundary() is not None:
                logger.warning(
                    "training stopped during iteration %d: checkpointed iteration %d as it ended",
                    progress.iteration + 1,
                    progress.iteration,
                )
            raise
        finally:
            bar.close()
            try:
                self.collector.shutdown(close_env=False)  # the env belongs to the caller
            except Exception:  # already shut down by the error being raised: keep that error
                logger.debug("collector shutdown after a failure", exc_info=True)
        return progress.history

    def _check_rollout(self, batch: TensorDictBase) -> None:
        """Every observation the actor saw, every action and log-probability it wrote, every reward and every
        next observation is finite (the message names the env and the rollout step); checked on the device,
        one host sync. The next observations matter at a step that ends an episode: its final observation,
        which the critic bootstraps from, is never seen by the actor (nor by a normalizer, when there is none).
        """
        checks = [
            (self.observation_key, f"observation {self.observation_key!r} as the actor saw it"),
            (("next", self.observation_key), f"next observation {self.observation_key!r} from the env"),
            *((key, f"{key!r} written by the actor") for key in self._actor_outputs),
            (("next", "reward"), "reward from the env"),
        ]
        for key, what in checks:
            self.numerics.require_finite(batch[key], what, batch, index_names=("env", "step"))
        self.numerics.raise_if_failed()

    def _to_host(
        self, metrics: dict[str, torch.Tensor], batch: TensorDictBase, episodes: dict[str, float]
    ) -> dict[str, float]:
        """The update's metrics, the reward and the learning rate in one host transfer (after the checks),
        with the episode statistics; averaged over ranks under ``torchrun``."""
        metrics = {
            **metrics,
            "reward_per_step": batch["next", "reward"].mean(),
            "learning_rate": self.update.learning_rate,
        }
        self.numerics.raise_if_failed()
        keys = list(metrics)
        values = torch.stack([metrics[key].detach().to(torch.float64).reshape(()) for key in keys]).tolist()
        host = {**episodes, **dict(zip(keys, values, strict=True))}
        if self.context.is_distributed:
            learning_rate = host.pop("learning_rate")  # equal on every rank
            host = {**parallel.all_reduce_mean(host, self.context.world_size), "learning_rate": learning_rate}
        return host

    def _synchronize_observation_statistics(self) -> None:
        """Every rank adopts the statistics of all ranks' observations so far."""
        merged = parallel.merge_normalizer_statistics(self.observation_normalizer.statistics(), self._shared_statistics)
        self.observation_normalizer.load_statistics(*merged)
        self._shared_statistics = merged

    def _episode_metrics(self, batch: TensorDictBase) -> dict[str, float]:
        next_step = batch["next"]
        return self.progress.record_episodes(
            next_step["done"].squeeze(-1),
            next_step[EPISODE_RETURN_KEY].squeeze(-1),
            next_step[EPISODE_LENGTH_KEY].squeeze(-1),
        )

    def _show(self, bar: tqdm, metrics: dict[str, Any], frames: int) -> None:
        summary = {
            "return": f"{metrics['episode_return']:.3g}",
            "fps": f"{metrics['frames_per_second']:.0f}",
        }
        # How far the update moved the policy: the likelihood-ratio family's sample KL, the pathwise
        # family's trust-region KL, or FPO++'s mean |ratio - 1| (it has no KL).
        for key, label in (("kl_approx", "kl"), ("path_kl", "kl"), ("mean_ratio_deviation", "|ratio-1|")):
            if key in metrics:
                summary[label] = f"{metrics[key]:.2g}"
                break
        summary["lr"] = f"{metrics['learning_rate']:.1e}"
        bar.update(frames)
        bar.set_postfix(summary, refresh=False)
        if not self.show_progress and self.context.is_main:  # logs still show the run's progress
            logger.info(
                "iteration %d, %d frames: %s",
                self.progress.iteration,
                self.progress.frames,
                ", ".join(f"{key} {value}" for key, value in summary.items()),
            )
