"""TruDi's actor: DIME's controlled Langevin SDE, tanh-squashed (DIME arXiv 2502.02316; TruDi arXiv 2606.15260).

Symbols: B the batch shape, o the observation size, d the action dimension, K the number of SDE
steps, S the number of KL chains per state.

The chain, as the TruDi authors' code has it (``docs/trudi.md``):

    x_0 ~ N(0, σ_p² I),   σ_p = 2.5
    x_{k+1} = μ_k + √(2η_k)·ε_k,   μ_k = x_k + η_k·(−x_k/σ_p² + u_θ(x_k, s, k)),   ε_k ~ N(0, I)
    η_k = dt_k / friction,   dt_k = softplus(dt)·c(k),   friction = softplus(f) per action dimension
    a = tanh(x_K)

with c(k) a cosine schedule (large steps first). The drift −x/σ_p² is the score of the prior, so
with u_θ = 0 (the initialization) the chain is a Langevin walk that keeps x near N(0, σ_p² I).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from tensordict.utils import NestedKey
from torch import nn

from diffrl.modules.dime_control_net import DIMEControlNet
from diffrl.modules.pathwise_policy import PathwisePolicy, PathwiseSample, tanh_log_det
from diffrl.modules.velocity_net import Activation

KLForm = Literal["auto", "simplified", "full"]
_LOG_2PI = math.log(2 * math.pi)


def cosine_step_schedule(num_steps: int, floor: float = 0.001, offset: float = 0.008) -> torch.Tensor:
    """c(k) = (1 − floor)·cos²(π/2 · (1 + offset − t_k)/(1 + offset)) + floor with t_k = (K − k)/K: [K].

    The multiplier of the step size dt along the chain: ≈ 1 at k = 0, small at the last step
    (0.039 for K = 8), the authors' ``cosine`` schedule with their floor 0.001 and offset 0.008.
    """
    steps = torch.arange(num_steps, dtype=torch.float64)
    t = (num_steps - steps) / num_steps
    angle = 0.5 * math.pi * (1 + offset - t) / (1 + offset)
    return ((1 - floor) * angle.cos().pow(2) + floor).float()


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Σ_dims log N(x; mean, variance): [*B, d] → [*B]."""
    return -0.5 * ((x - mean).pow(2) / variance + variance.log() + _LOG_2PI).sum(-1)


class DIMEActor(PathwisePolicy):
    """The DIME diffusion policy: sample through the SDE, its pseudo log-probability, its path KL, its ODE.

    **log π̂ is a bound, not log π.** The marginal density of a = tanh(x_K) has no closed form. As
    the authors do, :meth:`rsample` reports the pseudo log-probability of the sampled path,

        log π̂ = log N(x_0; 0, σ_p²) + Σ_k [log f_k(x_{k+1}|x_k) − log b_k(x_k|x_{k+1})] − log|∂a/∂x_K|,

    with f_k the forward kernel N(μ_k, 2η_k) and b_k the backward kernel N(x_{k+1} − η_k x_{k+1}/σ_p², 2η_k)
    (the uncontrolled Langevin step taken backward). Its expectation is E[log π(a)] plus the KL from
    the true path posterior to the backward chain: an upper bound on E[log π], so −E[log π̂] is a lower
    bound on the entropy. The temperature is tuned on the authors' entropy estimate, the same sum
    without the prior term log N(x_0; 0, σ_p²) (``entropy_estimate`` = −log π̂ + log N(x_0; …)).

    **Path KL.** :meth:`trust_region_kl` is KL(π_old‖π_θ) between the *paths* of the two SDEs from the
    same x_0 law: by the chain rule, E_old[Σ_k KL(f_k^old(·|x_k) ‖ f_k^θ(·|x_k))], estimated from S
    chains run under the old kernel (the authors' forward KL). Per step either

    - ``"full"``: the closed-form Gaussian KL Σ_dims log(σ_θ/σ_old) + (σ_old² + (μ_old − μ_θ)²)/(2σ_θ²) − ½;
    - ``"simplified"`` (the authors' code): Σ_dims (μ_θ − μ_old)²/(2σ_old²), which equals the full form
      exactly when the two step variances agree (same friction and dt), and drops the variance terms
      otherwise.

    ``kl_form="auto"`` picks ``"full"`` when friction or dt are learned, else ``"simplified"``.

    **Deterministic mode** (evaluation and export): the same chain with the noise ε_k off, x_0 still
    drawn (the authors' ODE sampler, which they found better than SDE sampling for deployment).

    Args:
        action_dim: d.
        obs_dim: o.
        num_steps: K (the authors: 8; 1 fails and 4 is worse on humanoids).
        hidden_sizes, activation, step_embed_dim: the control network's (the authors: 3 × 512, GELU).
        prior_std: σ_p (the authors: 2.5).
        init_friction: friction at initialization, every action dimension (the authors: 1).
        learn_friction: learn the per-dimension friction (the authors: yes).
        init_dt: softplus(dt) at initialization (the authors: 1/K).
        learn_dt: learn dt (the authors' torch configs: no).
        kl_form: ``"auto"``, ``"full"`` or ``"simplified"`` (see above).
        num_kl_samples: S, chains per state for the path KL (the authors' torch config: 1; 4 elsewhere).
        observation_key, action_key, log_prob_key: where the observation is read and the action and
            log π̂ are written.
        check_finite: check observations for NaN/inf through :attr:`numerics`.

    Example:
        >>> import torch
        >>> actor = DIMEActor(action_dim=2, obs_dim=3, hidden_sizes=[16])
        >>> sample = actor.rsample(torch.randn(5, 3))
        >>> sample.action.shape, sample.log_prob.shape, bool(sample.action.abs().max() < 1)
        (torch.Size([5, 2]), torch.Size([5]), True)
        >>> import copy
        >>> old = copy.deepcopy(actor)
        >>> float(actor.trust_region_kl(torch.randn(5, 3), old).abs().max()) < 1e-10  # u_θ ≈ 0 at init
        True
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        *,
        num_steps: int = 8,
        hidden_sizes: Sequence[int] = (512, 512, 512),
        activation: Activation = "gelu",
        step_embed_dim: int = 16,
        prior_std: float = 2.5,
        init_friction: float = 1.0,
        learn_friction: bool = True,
        init_dt: float | None = None,
        learn_dt: bool = False,
        kl_form: KLForm = "auto",
        num_kl_samples: int = 1,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        log_prob_key: NestedKey = "action_log_prob",
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            observation_key=observation_key, action_key=action_key, log_prob_key=log_prob_key, check_finite=check_finite
        )
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not prior_std > 0 or not init_friction > 0:
            raise ValueError(f"prior_std and init_friction must be > 0, got {prior_std}, {init_friction}")
        if kl_form not in ("auto", "simplified", "full"):
            raise ValueError(f"kl_form must be 'auto', 'simplified' or 'full', got {kl_form!r}")
        if num_kl_samples < 1:
            raise ValueError(f"num_kl_samples must be >= 1, got {num_kl_samples}")
        init_dt = 1.0 / num_steps if init_dt is None else init_dt
        if not init_dt > 0:
            raise ValueError(f"init_dt must be > 0, got {init_dt}")
        self.obs_dim, self.action_dim, self.num_steps = obs_dim, action_dim, num_steps
        self.prior_std = prior_std
        self.learn_friction, self.learn_dt = learn_friction, learn_dt
        self.kl_form: Literal["simplified", "full"] = (
            ("full" if learn_friction or learn_dt else "simplified") if kl_form == "auto" else kl_form
        )
        self.num_kl_samples = num_kl_samples
        self.control = DIMEControlNet(action_dim, obs_dim, num_steps, hidden_sizes, activation, step_embed_dim)
        friction = torch.full((action_dim,), _inverse_softplus(init_friction))
        dt = torch.tensor(_inverse_softplus(init_dt))
        # A frozen parameter is a buffer: it is saved and moved with the module, and no optimizer sees it.
        if learn_friction:
            self.friction_parameter = nn.Parameter(friction)
        else:
            self.register_buffer("friction_parameter", friction)
        if learn_dt:
            self.dt_parameter = nn.Parameter(dt)
        else:
            self.register_buffer("dt_parameter", dt)
        self.register_buffer("dt_schedule", cosine_step_schedule(num_steps))

    # The SDE's coefficients.

    def step_sizes(self) -> torch.Tensor:
        """η_k = softplus(dt)·c(k) / softplus(friction): [K, d]."""
        dt = nn.functional.softplus(self.dt_parameter) * self.dt_schedule
        return dt.unsqueeze(-1) / nn.functional.softplus(self.friction_parameter)

    def _drift_means(
        self, x: torch.Tensor, observation: torch.Tensor, step: int, step_size: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        """μ_k = x + η_k(−x/σ_p² + u_θ(x, s, k)): [B, d]."""
        control = self.control(x, observation, embedding[step].expand(x.shape[0], -1))
        return x + step_size * (control - x / self.prior_std**2)

    def _prior_draw(self, shape: torch.Size, reference: torch.Tensor) -> torch.Tensor:
        return self.prior_std * torch.randn(*shape, self.action_dim, dtype=reference.dtype, device=reference.device)

    # Sampling.

    def rsample(
        self, observation: torch.Tensor, initial: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> PathwiseSample:
        """a = tanh(x_K) with gradients through every step, log π̂ and the entropy estimate (class docstring).

        Args:
            observation: [*B, o].
            initial: x_0 [*B, d] (default: a prior draw).
            noise: the step noises ε [*B, K, d] (default: standard normal draws).
        """
        batch = observation.shape[:-1]
        flat_observation = observation.reshape(-1, self.obs_dim)
        x = (self._prior_draw(batch, observation) if initial is None else initial).reshape(-1, self.action_dim)
        if noise is not None:
            noise = noise.reshape(-1, self.num_steps, self.action_dim)
        prior_log_prob = _gaussian_log_prob(x, torch.zeros_like(x), x.new_full((), self.prior_std**2))
        path_log_ratio = x.new_zeros(x.shape[0])  # Σ_k log f_k − log b_k
        step_sizes = self.step_sizes().to(x.dtype)
        embedding = self.control.step_embeddings().to(x.dtype)
        for step in range(self.num_steps):
            step_size = step_sizes[step]
            variance = 2 * step_size
            mean = self._drift_means(x, flat_observation, step, step_size, embedding)
            epsilon = torch.randn_like(x) if noise is None else noise[:, step]
            following = mean + variance.sqrt() * epsilon
            backward_mean = following - step_size * following / self.prior_std**2
            path_log_ratio = (
                path_log_ratio
                + _gaussian_log_prob(following, mean, variance)
                - _gaussian_log_prob(x, backward_mean, variance)
            )
            x = following
        log_det = tanh_log_det(x)
        log_prob = prior_log_prob + path_log_ratio - log_det
        return PathwiseSample(
            action=x.tanh().reshape(*batch, self.action_dim),
            log_prob=log_prob.reshape(batch),
            entropy_estimate=(log_det - path_log_ratio).reshape(batch),
        )

    def deterministic_action(self, observation: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
        """The chain with its noise off, from x_0 (default: a prior draw): [*B, o] → [*B, d]."""
        batch = observation.shape[:-1]
        flat_observation = observation.reshape(-1, self.obs_dim)
        x = (self._prior_draw(batch, observation) if initial is None else initial).reshape(-1, self.action_dim)
        step_sizes = self.step_sizes().to(x.dtype)
        embedding = self.control.step_embeddings().to(x.dtype)
        for step in range(self.num_steps):
            x = self._drift_means(x, flat_observation, step, step_sizes[step], embedding)
        return x.tanh().reshape(*batch, self.action_dim)

    # The trust region.

    def trust_region_kl(
        self,
        observation: torch.Tensor,
        old: PathwisePolicy,
        *,
        noise: torch.Tensor | None = None,
        form: Literal["simplified", "full"] | None = None,
    ) -> torch.Tensor:
        """Path KL(π_old‖π_θ) per state [*B], from S = ``num_kl_samples`` chains under the old kernel.

        Args:
            observation: [*B, o].
            old: the frozen copy (a :class:`DIMEActor` of the same shape).
            noise: [*B, S, K+1, d] standard normal draws (x_0/σ_p, then the steps' ε); default random.
            form: ``"full"`` or ``"simplified"`` (default: :attr:`kl_form`).
        """
        if not isinstance(old, DIMEActor):
            raise TypeError(f"the path KL compares two DIMEActors, got {type(old).__name__}")
        form = form or self.kl_form
        batch = observation.shape[:-1]
        samples = self.num_kl_samples
        flat_observation = observation.reshape(-1, self.obs_dim).repeat_interleave(samples, dim=0)
        if noise is None:
            noise = torch.randn(
                flat_observation.shape[0], self.num_steps + 1, self.action_dim,
                dtype=observation.dtype, device=observation.device,
            )  # fmt: skip
        else:
            noise = noise.reshape(-1, self.num_steps + 1, self.action_dim)
        x = self.prior_std * noise[:, 0]
        new_steps = self.step_sizes().to(x.dtype)
        new_embedding = self.control.step_embeddings().to(x.dtype)
        with torch.no_grad():  # the old policy is a fixed reference
            old_steps = old.step_sizes().to(x.dtype)
            old_embedding = old.control.step_embeddings().to(x.dtype)
        kl = x.new_zeros(x.shape[0])
        for step in range(self.num_steps):
            new_mean = self._drift_means(x, flat_observation, step, new_steps[step], new_embedding)
            with torch.no_grad():
                old_mean = old._drift_means(x, flat_observation, step, old_steps[step], old_embedding)
            old_variance = 2 * old_steps[step]
            if form == "simplified":
                kl = kl + ((new_mean - old_mean).pow(2) / (2 * old_variance)).sum(-1)
            else:
                new_variance = 2 * new_steps[step]
                per_dim = (
                    0.5 * (new_variance / old_variance).log()
                    + (old_variance + (old_mean - new_mean).pow(2)) / (2 * new_variance)
                    - 0.5
                )
                kl = kl + per_dim.sum(-1)
            x = old_mean + old_variance.sqrt() * noise[:, step + 1]
        return kl.reshape(-1, samples).mean(-1).reshape(batch)

    # The actor contract (diffrl.modules.generative_policy).

    @property
    def noise_dim(self) -> int:
        """d: the prior draw x_0/σ_p; the exported sampler runs the deterministic chain from it."""
        return self.action_dim

    def export_sampler(self) -> nn.Module:
        return DIMESampler(self)

    def sampler_description(self) -> dict[str, Any]:
        return {
            "kind": "dime_sde",
            "steps": self.num_steps,
            "noise_layout": "[d]: x_0 = prior_std * noise, then the SDE's steps with their noise off (ODE mode)",
            "squash": "tanh",
        }


class DIMESampler(nn.Module):
    """The deterministic DIME chain from an explicit prior draw: [B, o], [B, d] → action [B, d]."""

    def __init__(self, actor: DIMEActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.actor.deterministic_action(observation, initial=self.actor.prior_std * noise)
