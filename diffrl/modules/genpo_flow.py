"""GenPO's exactly invertible doubled-action flow (arXiv 2505.18763), optionally with a learnable volume.

Symbols: B any leading batch shape, d the action dimension, o the observation size,
N the number of flow steps, p the mixing coefficient, ℓ(s) ∈ R^d the learnable log-scale,
L its bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from diffrl.modules.velocity_net import Activation, VelocityNet

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension, [*B, n] → [*B]."""
    return -0.5 * z.pow(2).sum(-1) - z.shape[-1] * _LOG_SQRT_2PI


class GenPOFlow(nn.Module):
    r"""The doubled-action flow of GenPO: an invertible map of R^{2d} with a closed-form Jacobian determinant.

    The latent action ã = (x, y) ∈ R^{2d} is obtained from base noise (x_0, y_0) ~ N(0, I_{2d})
    by N steps on the grid t_i = i/N with Δt = 1/N, all sharing one velocity net v_θ:

    .. code-block:: text

        x~ = x + Δt v(y, s, t_i)          y~ = y + Δt v(x~, s, t_i)
        x' = p x~ + (1-p) y~              y' = p y~ + (1-p) x'

    Each coupling is a shear (Jacobian determinant 1) and each mixing line is triangular
    with determinant p^d, so ``log|det ∂F/∂z| = 2·N·d·log p`` for every input and θ, and

    .. math:: \log π(ã|s) = \log N(F^{-1}(ã; s); 0, I_{2d}) - 2 N d \log p

    without any Jacobian computation. The executed action is (x_N + y_N)/2. A consequence
    (docs/genpo.md): the entropy of ã, d(1 + log 2π) + 2·N·d·log p, is the same for every θ,
    so an entropy bonus cannot move the policy.

    **Learnable volume** (``learnable_volume=True``, not in GenPO): before the first step both
    halves of the noise are scaled by one state-dependent factor per action coordinate,

    .. math:: (x_0, y_0) \mapsto (e^{ℓ(s)} ⊙ x_0,\; e^{ℓ(s)} ⊙ y_0), \qquad
              ℓ(s) = L \tanh(h_φ(s) / L),

    with h_φ a linear head on the observation whose weights and bias start at zero. The step is
    diagonal in z with entries that do not depend on z, so its log-determinant is exactly
    2·Σ_j ℓ_j(s), and

    .. math:: \log π(ã|s) = \log N(F^{-1}(ã; s); 0, I_{2d}) - 2 N d \log p - 2 \textstyle\sum_j ℓ_j(s),

    which makes the entropy d(1 + log 2π) + 2·N·d·log p + 2·Σ_j ℓ_j(s) a function of φ. At
    initialization ℓ = 0 exactly (tanh(0) = 0, e^0 = 1) and the flow is GenPO's, bit for bit. The
    scale sits on the noise, before the steps, rather than on the latent after them, because

    - the zero-noise (deterministic) action F(0; s) stays the velocity net's alone: the head sets the
      spread around it, as a Gaussian policy's standard deviation does. A scale after the last step
      would multiply the action's location too, so narrowing the spread around an action a would
      need the flow to output a·e^{−ℓ}, ever larger velocities;
    - one ℓ for both halves keeps the symmetry of x and y (one velocity net, the executed action their
      mean) and shrinks x_0 − y_0 together with x_0 + y_0, so narrowing the spread no longer needs the
      flow to spread x − y, which the compression loss fights.

    The tanh bound L (``max_log_scale``) keeps e^{ℓ} within [e^{−L}, e^{L}] smoothly; it is part of
    the map, so the log-determinant above stays exact.

    Reference: Ding et al., "GenPO: Generative Diffusion Models Meet On-Policy
    Reinforcement Learning", arXiv 2505.18763.

    Args:
        action_dim: d.
        obs_dim: o.
        num_steps: N (GenPO default 5).
        mix: p ∈ (0, 1] (GenPO default 0.95); 1 means no mixing.
        hidden_sizes, activation, time_embed_dim: the :class:`VelocityNet`.
        learnable_volume: add the state-dependent noise scale e^{ℓ(s)} (default off: GenPO as published).
        max_log_scale: L > 0, the bound of |ℓ| (used only with ``learnable_volume``).

    Example:
        >>> import torch
        >>> flow = GenPOFlow(action_dim=2, obs_dim=3, hidden_sizes=[32, 32])
        >>> obs, noise = torch.randn(5, 3), torch.randn(5, 4)
        >>> latent = flow(noise, obs)
        >>> torch.allclose(flow.inverse(latent, obs), noise, atol=1e-5)
        True
        >>> flow.log_prob(latent, obs).shape
        torch.Size([5])
        >>> volume = GenPOFlow(action_dim=2, obs_dim=3, hidden_sizes=[32, 32], learnable_volume=True)
        >>> volume.load_state_dict(flow.state_dict(), strict=False).missing_keys  # the head starts at zero
        ['volume_head.weight', 'volume_head.bias']
        >>> torch.equal(volume(noise, obs), latent), volume.log_scale(obs).shape
        (True, torch.Size([5, 2]))
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int,
        num_steps: int = 5,
        mix: float = 0.95,
        hidden_sizes: Sequence[int] = (400, 200, 100),
        activation: Activation = "mish",
        time_embed_dim: int = 32,
        learnable_volume: bool = False,
        max_log_scale: float = 5.0,
    ) -> None:
        super().__init__()
        if not 0.0 < mix <= 1.0:
            raise ValueError(f"GenPO mixing coefficient must lie in (0, 1], got mix={mix}")
        if num_steps < 1:
            raise ValueError(f"GenPO needs at least one flow step, got num_steps={num_steps}")
        if action_dim < 1 or obs_dim < 1:
            raise ValueError(f"action_dim and obs_dim must be positive, got {action_dim}, {obs_dim}")
        if not 0.0 < max_log_scale < math.inf:
            raise ValueError(f"max_log_scale must be positive and finite, got {max_log_scale}")
        self.action_dim = action_dim
        self.obs_dim = obs_dim
        self.num_steps = num_steps
        self.mix = mix
        self.velocity_net = VelocityNet(action_dim, obs_dim, hidden_sizes, activation, time_embed_dim)
        self.register_buffer("time_grid", torch.arange(num_steps) / num_steps)
        self.learnable_volume = learnable_volume
        self.max_log_scale = max_log_scale
        self.volume_head: nn.Linear | None = None
        if learnable_volume:
            # skip_init draws no random numbers: a seeded run samples the same noise with the option on or off.
            self.volume_head = nn.utils.skip_init(nn.Linear, obs_dim, action_dim)
            nn.init.zeros_(self.volume_head.weight)
            nn.init.zeros_(self.volume_head.bias)
        self.stacked_pass_compiled = False  # compile_stacked_pass() turns it on

    @property
    def constant_log_abs_det(self) -> float:
        """2·N·d·log p: the N steps' log|det|, the same for every input and θ (all of log|det ∂F/∂z| in GenPO)."""
        return 2.0 * self.num_steps * self.action_dim * math.log(self.mix)

    def log_scale(self, obs: torch.Tensor) -> torch.Tensor:
        """ℓ(s) = L·tanh(h_φ(s)/L), the log of the noise scale, [*B, o] → [*B, d]; zero without the learnable volume."""
        if self.volume_head is None:
            return obs.new_zeros(*obs.shape[:-1], self.action_dim)
        return self.max_log_scale * torch.tanh(self.volume_head(obs) / self.max_log_scale)

    def _scale_noise(
        self, x: torch.Tensor, y: torch.Tensor, obs: torch.Tensor, power: float
    ) -> tuple[torch.Tensor, ...]:
        """(x, y)·e^{power·ℓ(s)}: the volume step (power 1) or its inverse (−1); identity without the volume."""
        if self.volume_head is None:
            return x, y
        scale = (power * self.log_scale(obs)).exp()
        return x * scale, y * scale

    def _check(self, tensor: torch.Tensor, obs: torch.Tensor, name: str) -> None:
        if tensor.shape[-1] != 2 * self.action_dim:
            raise ValueError(
                f"{name} must have last dimension 2·d = {2 * self.action_dim}, got shape {tuple(tensor.shape)}"
            )
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"observation must have last dimension {self.obs_dim}, got shape {tuple(obs.shape)}")
        if tensor.shape[:-1] != obs.shape[:-1]:
            raise ValueError(
                f"{name} batch shape {tuple(tensor.shape[:-1])} differs from observation batch shape "
                f"{tuple(obs.shape[:-1])}"
            )

    def forward(self, noise: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """F(z; s): base noise [*B, 2d] → latent action [*B, 2d]."""
        self._check(noise, obs, "noise")
        p, dt = self.mix, 1.0 / self.num_steps
        velocity = self.velocity_net.velocity_in_context
        x, y = noise.chunk(2, dim=-1)
        x, y = self._scale_noise(x, y, obs, 1.0)
        for context in self._contexts(obs, self._time_features(noise.dtype)):
            x = torch.add(x, velocity(y, context), alpha=dt)
            y = torch.add(y, velocity(x, context), alpha=dt)
            x = torch.lerp(y, x, p)  # p·x + (1 − p)·y
            y = torch.lerp(x, y, p)
        return torch.cat([x, y], dim=-1)

    def inverse(self, latent: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """F⁻¹(ã; s): latent action [*B, 2d] → base noise [*B, 2d], exact up to round-off."""
        self._check(latent, obs, "latent action")
        p, dt = self.mix, 1.0 / self.num_steps
        velocity = self.velocity_net.velocity_in_context
        x, y = latent.chunk(2, dim=-1)
        for context in reversed(self._contexts(obs, self._time_features(latent.dtype))):
            y = torch.add(y, x, alpha=-(1.0 - p)).div_(p)
            x = torch.add(x, y, alpha=-(1.0 - p)).div_(p)
            y = torch.sub(y, velocity(x, context), alpha=dt)
            x = torch.sub(x, velocity(y, context), alpha=dt)
        x, y = self._scale_noise(x, y, obs, -1.0)
        return torch.cat([x, y], dim=-1)

    def inverse_and_forward(
        self, latent: torch.Tensor, latent_obs: torch.Tensor, noise: torch.Tensor, noise_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(F⁻¹(latent; latent_obs), F(noise; noise_obs)) in 2N velocity calls instead of 4N.

        The inversion walks the steps N−1..0 while the forward map walks 0..N−1; at every point each
        needs one velocity evaluation that does not depend on the other's, so the two are stacked
        into one call of [B₁ + B₂] rows (each row with its own step's context). The results equal
        :meth:`inverse` and :meth:`forward` up to round-off. Shapes: ``latent`` [B₁, 2d], ``latent_obs``
        [B₁, o], ``noise`` [B₂, 2d], ``noise_obs`` [B₂, o] (one batch dimension each). After
        :meth:`compile_stacked_pass` the pass runs as one compiled graph, forward and backward.
        """
        self._check(latent, latent_obs, "latent action")
        self._check(noise, noise_obs, "noise")
        if latent.ndim != 2 or noise.ndim != 2:
            raise ValueError("inverse_and_forward takes batches with one batch dimension, [B, 2d]")
        stacked_pass = _compiled_stacked_pass if self.stacked_pass_compiled else _stacked_pass
        return stacked_pass(self, latent, latent_obs, noise, noise_obs)

    def compile_stacked_pass(self) -> None:
        """Run :meth:`inverse_and_forward`'s 2N velocity calls and couplings as one ``torch.compile`` graph.

        The graph is compiled on first use, once per flow (a deep copy gets its own), for the batch
        sizes of that call (torch recompiles once, with dynamic sizes, if they change).
        """
        self.stacked_pass_compiled = True

    def _time_features(self, dtype: torch.dtype) -> torch.Tensor:
        """The N flow times' first-layer features [N, H], in one batched call."""
        return self.velocity_net.encode_time(self.time_grid.to(dtype))

    def _contexts(self, obs: torch.Tensor, time_features: torch.Tensor) -> list[torch.Tensor]:
        """Per flow step, the observation's plus the step time's first-layer features [*B, H]: computed
        once per call and shared by the step's two couplings."""
        features = self.velocity_net.encode_observation(obs)
        return [features + time_features[step] for step in range(self.num_steps)]

    def log_prob_of_noise(self, noise: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """log π(F(z; s)|s) from the base noise z that produced it, [*B, 2d] and [*B, o] → [*B]: no inversion.

        With the learnable volume the result depends on φ through ℓ(s), so an entropy estimate −log π
        of fresh samples carries the entropy's exact gradient 2·Σ_j ∇ℓ_j(s); ``obs`` may also be of a
        shape that broadcasts against the noise's batch shape.
        """
        log_prob = standard_normal_log_prob(noise) - self.constant_log_abs_det
        if self.volume_head is None:
            return log_prob
        return log_prob - 2.0 * self.log_scale(obs).sum(-1)

    def log_prob(self, latent: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Exact log π(ã|s) by inversion, [*B, 2d] → [*B]."""
        return self.log_prob_of_noise(self.inverse(latent, obs), obs)

    @staticmethod
    def action_from_latent(latent: torch.Tensor) -> torch.Tensor:
        """The executed action (x + y)/2, [*B, 2d] → [*B, d]."""
        x, y = latent.chunk(2, dim=-1)
        return 0.5 * (x + y)


def _stacked_pass(
    flow: GenPOFlow, latent: torch.Tensor, latent_obs: torch.Tensor, noise: torch.Tensor, noise_obs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`GenPOFlow.inverse_and_forward` after its checks: a pure tensor function of the flow's weights."""
    p, dt, rows = flow.mix, 1.0 / flow.num_steps, latent.shape[0]
    velocity = flow.velocity_net.velocity_in_context
    time_features = flow._time_features(latent.dtype)  # the same N times for both walks
    inverse_contexts = flow._contexts(latent_obs, time_features)
    forward_contexts = flow._contexts(noise_obs, time_features)
    x, y = latent.chunk(2, dim=-1)  # walked back to the noise
    u, w = noise.chunk(2, dim=-1)  # walked forward to a latent
    u, w = flow._scale_noise(u, w, noise_obs, 1.0)
    for step in range(flow.num_steps):
        context = torch.cat([inverse_contexts[flow.num_steps - 1 - step], forward_contexts[step]])
        y = torch.add(y, x, alpha=-(1.0 - p)).div_(p)
        x = torch.add(x, y, alpha=-(1.0 - p)).div_(p)
        both = velocity(torch.cat([x, w]), context)  # the inverse's v(x), the forward's v(w)
        y, u = torch.sub(y, both[:rows], alpha=dt), torch.add(u, both[rows:], alpha=dt)
        both = velocity(torch.cat([y, u]), context)  # the inverse's v(y), the forward's v(u)
        x, w = torch.sub(x, both[:rows], alpha=dt), torch.add(w, both[rows:], alpha=dt)
        u = torch.lerp(w, u, p)
        w = torch.lerp(u, w, p)
    x, y = flow._scale_noise(x, y, latent_obs, -1.0)
    return torch.cat([x, y], dim=-1), torch.cat([u, w], dim=-1)


# Compiled lazily, on the first call of a flow that asked for it; Dynamo guards on the flow, so each
# instance (a deep copy too) gets a graph of its own weights. The flow's floats (mix, 1/N) stay
# constants of the graph (specialize_float): traced as symbols, as Dynamo does once a second flow with
# another mix comes along, they become add's alpha through a tensor-to-scalar read that Inductor
# (torch 2.11) cannot lower. Not dynamic=True, for the same reason; the default recompiles once with
# dynamic sizes if the batch sizes change (an update's never do).
_compiled_stacked_pass = torch._dynamo.config.patch(specialize_float=True)(torch.compile(_stacked_pass))
