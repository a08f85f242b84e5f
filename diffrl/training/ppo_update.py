"""The likelihood-ratio family's update: GAE, then epochs × minibatches of a PPO-family loss.

PPO (arXiv 1707.06347), GenPO (arXiv 2505.18763) and TruDi-PPO share it; the KL-adaptive learning
rate is rsl_rl's rule (arXiv 2109.11978), the one GenPO's official code uses.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.objectives import LossModule
from torchrl.objectives.value import GAE

from diffrl.objectives.pathwise import PathwiseTrustRegionLoss
from diffrl.torchrl_compat import ppo_clip_value_as_float
from diffrl.training import distributed as parallel
from diffrl.training.actor_average import ActorAverage
from diffrl.training.distributed import DistributedContext
from diffrl.training.update_rule import (
    UpdateRule,
    adam,
    require_whole_output,
    share_deferred_numerics,
    shuffled_minibatches,
)


class KLAdaptiveLearningRate:
    """rsl_rl's KL-adaptive learning rate with the rate kept as a tensor, so a step never syncs the host.

    After each minibatch, with KL the loss's ``kl_approx``: lr ← lr / ``factor`` if KL > 2·``desired_kl``,
    lr ← lr · ``factor`` if 0 < KL < ``desired_kl``/2, else unchanged; then clipped to
    [``min_lr``, ``max_lr``]. The same rule as TorchRL's ``KLAdaptiveLR``, computed with
    ``torch.where`` on a float64 0-d tensor that the optimizer reads as its ``lr`` (so a compiled or
    CUDA-graphed step sees a changing rate without recompiling). The rate lives in the optimizer's
    state dict. A non-finite KL leaves the rate as it is and is reported by the numerics monitor.

    Example:
        >>> import torch
        >>> parameter = torch.nn.Parameter(torch.zeros(1))
        >>> optimizer = torch.optim.Adam([parameter], lr=torch.tensor(5e-4, dtype=torch.float64))
        >>> rule = KLAdaptiveLearningRate(optimizer, desired_kl=0.01)
        >>> rule.step(torch.tensor(0.05))  # KL above twice the target: lr / 1.5
        >>> round(float(optimizer.param_groups[0]["lr"]), 8)
        0.00033333
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        desired_kl: float,
        *,
        factor: float = 1.5,
        min_lr: float = 1e-5,
        max_lr: float = 1e-2,
    ) -> None:
        if not math.isfinite(desired_kl) or desired_kl <= 0:
            raise ValueError(f"desired_kl must be finite and > 0, got {desired_kl}")
        if not math.isfinite(factor) or factor <= 1:
            raise ValueError(f"lr_factor must be finite and > 1, got {factor}")
        if not 0 < min_lr <= max_lr < math.inf:
            raise ValueError(f"need 0 < min_lr <= max_lr < inf, got {min_lr=}, {max_lr=}")
        for group in optimizer.param_groups:
            if not isinstance(group["lr"], torch.Tensor):
                raise ValueError("KLAdaptiveLearningRate needs the optimizer's lr as a tensor (torch.tensor(lr))")
        self.optimizer = optimizer
        self.desired_kl, self.factor, self.min_lr, self.max_lr = desired_kl, factor, min_lr, max_lr

    def step(self, kl: torch.Tensor) -> None:
        kl = kl.detach().to(torch.float64)
        for group in self.optimizer.param_groups:
            lr = group["lr"]
            scaled = torch.where(
                kl > 2 * self.desired_kl,
                lr / self.factor,
                torch.where((kl > 0) & (kl < self.desired_kl / 2), lr * self.factor, lr),
            )
            lr.copy_(scaled.clamp(self.min_lr, self.max_lr))


class PPOUpdate(UpdateRule):
    """GAE with time-out bootstrapping, then ``num_epochs`` × ``num_minibatches`` steps of a PPO-family loss.

    Per iteration: advantages by GAE (the env must give the true final observation on a truncated
    step), standardized over the whole rollout (over all ranks under ``torchrun``), then per
    shuffled minibatch the sum of the loss's ``loss_*`` terms, gradient averaging across ranks,
    global gradient-norm clipping, an Adam step (AdamW with ``weight_decay > 0``) and — per minibatch,
    as GenPO and rsl_rl do — the KL-adaptive learning rate fed with the loss's ``kl_approx`` (averaged
    over ranks). With ``ema_decay > 0`` an :class:`~diffrl.training.actor_average.ActorAverage` of the
    actor is stepped after each iteration and becomes :attr:`deployed_actor` once warm (FPO++'s EMA).

    Nothing in :meth:`update` reads a tensor on the host: the metrics come back as 0-d tensors, the
    numerical checks of the loss and actor are deferred to :attr:`numerics`, which the loop inspects
    once per iteration, and the loss's value clip becomes a Python float
    (:func:`~diffrl.torchrl_compat.ppo_clip_value_as_float`: TorchRL branches on its buffer).

    Reference: PPO, Schulman et al., arXiv 1707.06347; GAE, arXiv 1506.02438; the adaptive rate and
    schedule of rsl_rl (Rudin et al., arXiv 2109.11978) as GenPO (arXiv 2505.18763) uses them.

    Args:
        loss_module: a PPO-family loss (``ClipPPOLoss``, ``GenPOLoss``, ``TruDiPPOLoss``, ``DPPOLoss``,
            ``FPOPlusPlusLoss``) whose
            ``actor_network`` collects and whose ``critic_network`` GAE reads.
        num_epochs, num_minibatches: the schedule (GenPO Ant: 5 × 4).
        learning_rate: the initial Adam learning rate (GenPO Ant: 5e-4).
        adaptive_lr: adapt the rate to ``desired_kl`` (:class:`KLAdaptiveLearningRate`); else fixed.
            Needs a loss that reports ``kl_approx`` (FPO++'s does not).
        desired_kl, lr_factor, min_lr, max_lr: the adaptive rule (GenPO: 0.01, 1.5, 1e-5, 1e-2).
        gamma, lmbda: GAE's discount and λ (GenPO: 0.99, 0.95).
        max_grad_norm: the global gradient-norm clip (GenPO: 1.0).
        normalize_advantage: standardize advantages over the rollout.
        weight_decay: decoupled weight decay (AdamW; FPO++: 1e-4); 0 is plain Adam.
        ema_decay: the decay of the deployed actor's weight average (FPO++: 0.95); 0 deploys the trained actor.
        ema_warmup_updates: iterations before that average starts (FPO++: 500).
        distributed: this process's place in a ``torchrun`` launch (``None``: one process).

    Example:
        >>> import torch
        >>> from torchrl.objectives import ClipPPOLoss
        >>> from diffrl.modules import GaussianActor, make_value_network
        >>> actor, critic = GaussianActor(2, 3, [8]), make_value_network(3, [8])
        >>> update = PPOUpdate(ClipPPOLoss(actor, critic), num_epochs=1, num_minibatches=2)
        >>> sorted(update.checkpoint_components())
        ['actor', 'critic', 'optimizer']
    """

    def __init__(
        self,
        loss_module: LossModule,
        *,
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
        weight_decay: float = 0.0,
        ema_decay: float = 0.0,
        ema_warmup_updates: int = 500,
        distributed: DistributedContext | None = None,
    ) -> None:
        if isinstance(loss_module, PathwiseTrustRegionLoss):
            raise TypeError(f"{type(loss_module).__name__} is a pathwise loss: train it with trainer=pathwise")
        require_whole_output(loss_module)
        if num_epochs < 1 or num_minibatches < 1:
            raise ValueError(f"num_epochs and num_minibatches must be >= 1, got {num_epochs}, {num_minibatches}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if adaptive_lr and "kl_approx" not in loss_module.out_keys:
            raise ValueError(
                f"{type(loss_module).__name__} reports no kl_approx for the KL-adaptive learning rate: set "
                "trainer.adaptive_lr=false"
            )
        self.loss_module = ppo_clip_value_as_float(loss_module)
        self.actor = loss_module.actor_network
        self.critic = loss_module.critic_network
        self.num_epochs, self.num_minibatches = num_epochs, num_minibatches
        self.max_grad_norm = max_grad_norm
        self.normalize_advantage = normalize_advantage
        self.context = distributed or DistributedContext()
        if self.context.is_distributed:
            parallel.broadcast_parameters(loss_module)
        # GAE reads the values _estimate_values writes: one critic pass where TorchRL's would make two.
        self.advantage_module = GAE(gamma=gamma, lmbda=lmbda, value_network=None, average_gae=False)
        self.optimizer = adam(list(loss_module.parameters()), learning_rate, weight_decay=weight_decay)
        self.actor_average = (
            ActorAverage(self.actor, decay=ema_decay, warmup_updates=ema_warmup_updates) if ema_decay > 0 else None
        )
        self.lr_rule = (
            KLAdaptiveLearningRate(self.optimizer, desired_kl, factor=lr_factor, min_lr=min_lr, max_lr=max_lr)
            if adaptive_lr
            else None
        )
        self.numerics = share_deferred_numerics(loss_module, self.actor)

    @property
    def learning_rate(self) -> torch.Tensor:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def deployed_actor(self) -> TensorDictModuleBase:
        if self.actor_average is not None and self.actor_average.active:
            return self.actor_average.average
        return self.actor

    def checkpoint_components(self) -> dict[str, Any]:
        components = {"actor": self.actor, "critic": self.critic, "optimizer": self.optimizer}
        if self.actor_average is not None:
            components["actor_average"] = self.actor_average
        return components

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            self._estimate_values(batch)
            self.advantage_module(batch)
        # The next step's keys served GAE; the losses read the current step only, so the minibatch
        # gather skips them.
        flat = batch.reshape(-1).exclude("next")
        if self.normalize_advantage:
            flat["advantage"] = self._normalized_advantage(flat["advantage"])
        parameters = list(self.loss_module.parameters())
        sums: dict[str, torch.Tensor] = {}
        grad_norm_sum = torch.zeros((), device=flat.device)
        for _ in range(self.num_epochs):
            for minibatch in shuffled_minibatches(flat, self.num_minibatches):
                out = self.loss_module(minibatch)
                if self.lr_rule is not None:
                    kl = out["kl_approx"].detach()
                    if self.context.is_distributed:
                        kl = parallel.all_reduce_sum(kl) / self.context.world_size
                    self.numerics.require(
                        ~torch.isfinite(kl), "KL-adaptive learning rate", kl, lambda v: f"the KL {v[0]} is not finite"
                    )
                    self.lr_rule.step(kl)
                loss = sum(value for key, value in out.items() if key.startswith("loss_"))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.context.is_distributed:
                    parallel.average_gradients(parameters, self.context.world_size)
                grad_norm_sum += torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
                self.optimizer.step()
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
        if self.actor_average is not None:
            self.actor_average.step(self.actor)
        count = self.num_epochs * self.num_minibatches
        metrics = {key: value / count for key, value in sums.items()}
        metrics["grad_norm"] = grad_norm_sum / count
        return metrics

    def _estimate_values(self, batch: TensorDictBase, *, select_ended: bool | None = None) -> None:
        """Writes V(s_t) and V(s_t+1) into the rollout [..., steps], with one critic pass where TorchRL's GAE makes two.

        A step's next observation is the following step's observation unless its episode ended there
        (the env's final observation, then a reset). On a CPU the critic therefore evaluates the
        observations, and the next observations of the last step and of the ended steps only; the
        shifted values supply the rest. On other devices, where selecting the ended steps would make
        the host wait for their count, it evaluates all next observations: TorchRL's cost, no sync.
        ``select_ended`` overrides that choice (``None``: by the device).
        """
        value_key = self.advantage_module.tensor_keys.value
        in_keys = self.critic.in_keys
        value = self.critic(batch.select(*in_keys)).get(value_key)
        following = batch.get("next").select(*in_keys)
        if select_ended is None:
            select_ended = value.device.type == "cpu"
        if select_ended:
            ended = batch.get(("next", self.advantage_module.tensor_keys.done)).squeeze(-1).clone()
            ended[..., -1] = True
            self._require_continuing_observations(batch, ended)
            next_value = torch.empty_like(value)
            next_value[..., :-1, :] = value[..., 1:, :]
            next_value[ended] = self.critic(following[ended]).get(value_key)
        else:
            next_value = self.critic(following).get(value_key)
        batch.set(value_key, value)
        batch.set(("next", value_key), next_value)

    def _require_continuing_observations(self, batch: TensorDictBase, ended: torch.Tensor) -> None:
        """The shift above is only right on a collector's rollout: next observation = the following one unless ended."""
        time, steps = ended.ndim - 1, ended.shape[-1]
        for key in self.critic.in_keys:
            current, following = batch.get(key), batch.get(("next", key))
            same = torch.isclose(
                following.narrow(time, 0, steps - 1), current.narrow(time, 1, steps - 1), rtol=0, atol=0, equal_nan=True
            )
            continuing = same.flatten(ended.ndim).all(-1) | ended[..., :-1]
            if not bool(continuing.all()):
                step = int((~continuing).nonzero()[0, -1])
                raise ValueError(
                    f"the rollout's next {key!r} at step {step} is not the following step's {key!r}, yet the "
                    "episode did not end there: PPOUpdate takes a collector's rollouts [..., steps] in time order"
                )

    def _normalized_advantage(self, advantage: torch.Tensor) -> torch.Tensor:
        """Standardized with the mean and (unbiased) std of the whole rollout, over all ranks."""
        wide = advantage.double()
        moments = torch.stack([wide.sum(), wide.pow(2).sum(), wide.new_full((), advantage.numel())])
        if self.context.is_distributed:
            moments = parallel.all_reduce_sum(moments)
        total, total_squares, count = moments.unbind()
        mean = total / count
        # Round-off can push the sum formula a hair below zero for a constant advantage.
        std = ((total_squares - count * mean**2) / (count - 1)).clamp_min(0).sqrt()
        return ((advantage - mean) / std.clamp_min(1e-8)).to(advantage.dtype)
