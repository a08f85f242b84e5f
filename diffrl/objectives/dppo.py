r"""DPPO: PPO over the denoising steps of a Gaussian diffusion chain (Ren et al., arXiv 2409.00588).

Symbols: B the batch shape, K the number of denoising steps, d the action dimension. Chain order as in
:mod:`diffrl.modules.denoising_chain`: row i of a per-step tensor is the step k = K − i (row 0 the
noisiest, row K − 1 the one that writes the action x_0).
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule

from diffrl.modules.trudi_actor import TruDiActor
from diffrl.objectives.denoising_chain_ppo import DenoisingChainPPOLoss
from diffrl.objectives.estimators import effective_sample_size, kl_k1, kl_k3, max_ratio


def step_log_probs(chain: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x_{k−1}; μ_k, σ_k²) per step and action dimension: chain [*B, K+1, d], means [*B, K, d],
    stds [K, d] or [*B, K, d] → [*B, K, d]."""
    z = (chain[..., 1:, :] - mean) / std
    return -0.5 * z.square() - std.log() - 0.5 * math.log(2 * math.pi)


def clip_schedule(num_steps: int, final: float, noisiest: float, rate: float) -> torch.Tensor:
    """DPPO's per-step ratio clip [K] in chain order: ``noisiest`` at row 0 rising exponentially to ``final``.

    With τ = i/(K−1): ε_i = noisiest + (final − noisiest)·(e^{rate·τ} − 1)/(e^{rate} − 1) (``rate = 0``:
    linear). A one-step chain gets ``final`` (the reference divides 0 by 0 there).

    Example:
        >>> clip_schedule(3, final=0.2, noisiest=0.1, rate=0.0).tolist()
        [0.1, 0.15000000000000002, 0.2]
    """
    if num_steps == 1:
        return torch.tensor([final], dtype=torch.float64)
    tau = torch.arange(num_steps, dtype=torch.float64) / (num_steps - 1)
    shape = tau if rate == 0 else torch.expm1(rate * tau) / math.expm1(rate)
    return noisiest + (final - noisiest) * shape


class DPPOLoss(DenoisingChainPPOLoss):
    r"""DPPO's surrogate: each denoising step of the stored chain is a PPO sample of its own.

    For row i (step k = K − i) of the chain stored at rollout, the per-step ratio is

    .. math::

        r_i = \exp\big(\bar\ell_θ(x_{k−1} | x_k, s) − \bar\ell_{old}(x_{k−1} | x_k, s)\big),\qquad
        \bar\ell = \tfrac1d \sum_j \mathrm{clamp}\big(\log N(x_{k−1,j}; μ_{k,j}, σ_{k,j}^2), ℓ_{min}, ℓ_{max}\big)

    (the mean over action dimensions of clamped log-densities, as DPPO's code has it), and the loss is

    .. math::

        L = −\frac{1}{K}\sum_i E\big[\min(r_i A_i, \mathrm{clip}(r_i, 1 − ε_i, 1 + ε_i) A_i)\big] + c_v L^V − c_H H,
        \qquad A_i = γ_d^{\,K−1−i} A

    with the per-step clip ε_i of :func:`clip_schedule` (the noisiest step ``clip_epsilon_noisiest``,
    the last ``clip_epsilon``) and the denoising discount γ_d (1 for the step that writes the action).
    The old step Gaussians are the actor's stored means and stds, so the surrogate needs no second
    network pass. The chain shares :class:`~diffrl.modules.denoising_chain.DenoisingChain` and
    :class:`~diffrl.modules.trudi_actor.TruDiActor` with TruDi-PPO
    (:class:`~diffrl.objectives.trudi_ppo.TruDiPPOLoss`): the two differ only in the trust region
    (per-step clips here, a whole-chain KL projection there).

    The clamped, dimension-averaged log-density is DPPO's surrogate, not a likelihood; the KL and
    ESS diagnostics use the exact chain likelihood Σ_{i,j} log N (what TruDi-PPO and GenPO report).

    What differs from the reference (``irom-princeton/dppo``, fine-tuning a pretrained policy): every
    step is trained (its ``ft_denoising_steps`` = K, no frozen copy), the advantage is normalized
    over the whole rollout by the trainer (the reference: per minibatch, before the denoising
    discount), and a minibatch holds whole chains (the reference samples (state, step) pairs).

    Outputs (scalars): ``loss_objective``, ``loss_critic``, ``loss_entropy`` when ``entropy_coeff > 0``;
    diagnostics ``kl_approx`` and ``kl_k3`` (KL(π_old ‖ π_θ) of the whole chain), ``step_kl_approx``
    (DPPO's k3 estimate over the per-step ratios), ``clip_fraction`` (over states and steps),
    ``clip_fraction_<k>`` for k = 1..K, ``log_prob_clamp_fraction`` (entries at ℓ_min or ℓ_max),
    ``ESS``, ``max_ratio`` (of the chain), ``entropy`` (the exact chain entropy),
    ``denoised_clip_fraction``, ``explained_variance`` and ``value_clip_fraction``.

    Args:
        actor_network: the :class:`~diffrl.modules.trudi_actor.TruDiActor`.
        critic_network: a value module writing ``"state_value"`` [*B, 1].
        clip_epsilon: ε of the last step (DPPO's ``clip_ploss_coef``; its gym fine-tuning value 0.01).
        clip_epsilon_noisiest: ε of the noisiest step (``clip_ploss_coef_base``; ``None``: ``clip_epsilon``).
        clip_rate: the schedule's exponential rate (``clip_ploss_coef_rate``, 3).
        denoising_discount: γ_d (``gamma_denoising``, 0.99).
        log_prob_bounds: (ℓ_min, ℓ_max) of the per-entry log-density clamp (the reference's (−5, 2)).
        critic_coeff, clip_value, loss_critic_type, entropy_coeff, normalize_advantage: as
            :class:`~diffrl.objectives.exact_ratio_ppo.ExactRatioPPOLoss` (DPPO: 0.5, no value clip).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.modules import MLP, ValueOperator
        >>> from diffrl.modules import DenoisingChain
        >>> actor = TruDiActor(DenoisingChain(action_dim=2, obs_dim=3, num_steps=4, hidden_sizes=[16]))
        >>> critic = ValueOperator(MLP(in_features=3, out_features=1, num_cells=[16]), in_keys=["observation"])
        >>> loss = DPPOLoss(actor, critic, clip_epsilon=0.2, clip_epsilon_noisiest=0.1)
        >>> batch = actor(TensorDict({"observation": torch.randn(8, 3)}, batch_size=[8]))
        >>> batch["advantage"], batch["value_target"] = torch.randn(8, 1), torch.randn(8, 1)
        >>> batch["state_value"] = torch.zeros(8, 1)
        >>> out = loss(batch)
        >>> abs(float(out["kl_approx"])) < 1e-5, float(out["clip_fraction"])  # θ = θ_old
        (True, 0.0)
    """

    def __init__(
        self,
        actor_network: TruDiActor,
        critic_network: TensorDictModule | None = None,
        *,
        clip_epsilon: float = 0.01,
        clip_epsilon_noisiest: float | None = 0.01,
        clip_rate: float = 3.0,
        denoising_discount: float = 0.99,
        log_prob_bounds: tuple[float, float] = (-5.0, 2.0),
        critic_coeff: float = 0.5,
        clip_value: float | None = None,
        loss_critic_type: str = "l2",
        entropy_coeff: float = 0.0,
        normalize_advantage: bool = False,
    ) -> None:
        noisiest = clip_epsilon if clip_epsilon_noisiest is None else clip_epsilon_noisiest
        if not (clip_epsilon > 0 and noisiest > 0):
            raise ValueError(f"the clips must be > 0, got {clip_epsilon=}, {clip_epsilon_noisiest=}")
        if not 0 < denoising_discount <= 1:
            raise ValueError(f"denoising_discount must be in (0, 1], got {denoising_discount}")
        low, high = log_prob_bounds
        if not low < high:
            raise ValueError(f"log_prob_bounds must be (low, high) with low < high, got {log_prob_bounds}")
        super().__init__(
            actor_network,
            critic_network,
            clip_epsilon=clip_epsilon,
            critic_coeff=critic_coeff,
            clip_value=clip_value,
            loss_critic_type=loss_critic_type,
            entropy_coeff=entropy_coeff,
            normalize_advantage=normalize_advantage,
        )
        num_steps = actor_network.num_steps
        self.log_prob_bounds = (float(low), float(high))
        # Kept in float64 and cast where used, so that a float64 loss computes with the exact schedule.
        self.register_buffer("step_clips", clip_schedule(num_steps, clip_epsilon, noisiest, clip_rate))
        exponents = torch.arange(num_steps - 1, -1, -1, dtype=torch.float64)
        self.register_buffer("step_discounts", denoising_discount**exponents)

    def _policy_out_keys(self) -> list[str]:
        keys = ["loss_objective", "kl_approx", "kl_k3", "step_kl_approx", "clip_fraction"]
        keys += [f"clip_fraction_{k}" for k in range(1, self.actor_network.num_steps + 1)]
        keys += ["log_prob_clamp_fraction", "ESS", "max_ratio", "entropy", "denoised_clip_fraction"]
        return keys

    def surrogate_log_probs(self, entry_log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DPPO's per-step log-density [*B, K] from per-entry ones [*B, K, d], and the clamped entries' mask."""
        low, high = self.log_prob_bounds
        clamped = (entry_log_probs < low) | (entry_log_probs > high)
        return entry_log_probs.clamp(low, high).mean(-1), clamped

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = tensordict.clone(False)
        advantage = self._advantage(tensordict)
        chain_key = self.tensor_keys.action
        chain, old_log_prob, old_mean, old_std = self.rollout_chain(tensordict)

        dist = self.actor_network.get_dist(tensordict)
        step_means = dist.step_means(chain)
        self.numerics.require_finite(step_means.mean, "DPPO per-step means μ_θ(x_k, k, s)", tensordict, chain_key)
        new_entries = step_log_probs(chain, step_means.mean, dist.stds)
        old_entries = step_log_probs(chain, old_mean, old_std)
        new_steps, clamped = self.surrogate_log_probs(new_entries)
        old_steps, _ = self.surrogate_log_probs(old_entries)
        # The exact chain log-ratio (the stored log-probability is the rollout chain's), for the diagnostics.
        chain_log_ratio = self._log_ratio(new_entries.sum((-2, -1)), old_log_prob)

        self._require_advantage_shape(advantage, chain_log_ratio)
        step_advantage = advantage * self.step_discounts.to(advantage.dtype)  # [*B, K]
        clips = self.step_clips.to(advantage.dtype)
        step_log_ratio = new_steps - old_steps
        self.numerics.require_finite(step_log_ratio, "DPPO per-step log-ratio", tensordict, chain_key)
        ratio = step_log_ratio.exp()
        clipped_ratio = torch.minimum(torch.maximum(ratio, 1 - clips), 1 + clips)
        surrogate = torch.minimum(ratio * step_advantage, clipped_ratio * step_advantage)
        step_clipped = (clipped_ratio != ratio).float()

        log_ratio = chain_log_ratio.detach()
        entropy = dist.entropy().mean()
        out = TensorDict(
            {
                "loss_objective": -surrogate.mean(),
                "kl_approx": kl_k1(log_ratio),
                "kl_k3": kl_k3(log_ratio),
                "step_kl_approx": kl_k3(step_log_ratio.detach()),
                "clip_fraction": step_clipped.mean(),
                "log_prob_clamp_fraction": clamped.float().mean(),
                "ESS": effective_sample_size(log_ratio),
                "max_ratio": max_ratio(log_ratio),
                "entropy": entropy.detach(),
                "denoised_clip_fraction": step_means.clipped.float().mean(),
            }
        )
        per_step = step_clipped.reshape(-1, step_clipped.shape[-1]).mean(0)
        for row, value in enumerate(per_step):  # row i is the denoising step k = K − i
            out[f"clip_fraction_{self.actor_network.num_steps - row}"] = value
        return self._add_entropy_and_critic(out, entropy, tensordict)
