"""The distribution of GenPO's doubled action given observations (arXiv 2505.18763).

Symbols: B the batch shape of the observations, S a sample shape, d the action dimension.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.distributions import Distribution, constraints

from diffrl.modules.genpo_flow import GenPOFlow


class GenPODistribution(Distribution):
    """π_θ(ã | s) over latent actions ã = (x, y) ∈ R^{2d}, the push-forward of N(0, I_{2d}) by the flow.

    ``log_prob`` is exact, by one inversion of the flow and its closed-form log-determinant;
    sampling needs one forward pass and knows its log-likelihood from the noise, so
    :meth:`rsample_and_log_prob` costs one pass and no inversion. Its gradient flows to the
    velocity net through the reparameterized sample (for the compression term) and, with the flow's
    learnable volume, to its log-scale head through the log-determinant (for the entropy term).

    Args:
        flow: the :class:`GenPOFlow`.
        observation: [*B, o].

    Example:
        >>> import torch
        >>> flow = GenPOFlow(action_dim=2, obs_dim=3, hidden_sizes=[16])
        >>> dist = GenPODistribution(flow, torch.randn(4, 3))
        >>> latent, log_prob = dist.rsample_and_log_prob()
        >>> latent.shape, log_prob.shape
        (torch.Size([4, 4]), torch.Size([4]))
        >>> torch.allclose(dist.log_prob(latent), log_prob, atol=1e-4)
        True
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, flow: GenPOFlow, observation: torch.Tensor) -> None:
        self.flow = flow
        self.observation = observation
        super().__init__(
            batch_shape=observation.shape[:-1],
            event_shape=torch.Size([2 * flow.action_dim]),
            validate_args=False,
        )

    def _noise(self, sample_shape: torch.Size) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return torch.randn(shape, dtype=self.observation.dtype, device=self.observation.device)

    def _push_forward(self, noise: torch.Tensor) -> torch.Tensor:
        observation = self.observation.expand(*noise.shape[:-1], self.observation.shape[-1])
        return self.flow(noise, observation)

    def rsample_and_log_prob(self, sample_shape: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized latent actions [*S, *B, 2d] and their exact log π [*S, *B], one flow pass."""
        noise = self._noise(sample_shape)
        return self._push_forward(noise), self.flow.log_prob_of_noise(noise, self.observation)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self._push_forward(self._noise(sample_shape))

    def log_prob_and_rsample(
        self, value: torch.Tensor, sample_rows: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`log_prob` of ``value`` [B, 2d] and :meth:`rsample_and_log_prob` at the first ``sample_rows``
        observations (all by default), in one batched flow pass (:meth:`GenPOFlow.inverse_and_forward`).

        Returns log π(value) [B], the fresh latents [R, 2d] and their log π [R]; one batch dimension.
        """
        rows = self.batch_shape[0] if sample_rows is None else sample_rows
        if len(self.batch_shape) != 1 or not 1 <= rows <= self.batch_shape[0]:
            raise ValueError(f"need one batch dimension and 1 <= sample_rows <= {self.batch_shape}, got {rows}")
        noise = self._noise(torch.Size())[:rows]
        base, fresh = self.flow.inverse_and_forward(value, self.observation, noise, self.observation[:rows])
        log_prob = self.flow.log_prob_of_noise(base, self.observation)
        return log_prob, fresh, self.flow.log_prob_of_noise(noise, self.observation[:rows])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact log π(ã | s) by inversion, [*S, *B, 2d] → [*S, *B]."""
        observation = self.observation.expand(*value.shape[:-1], self.observation.shape[-1])
        return self.flow.log_prob(value, observation)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        """The latent action of zero noise, F(0; s): GenPO's deterministic action."""
        return self._push_forward(torch.zeros(self.batch_shape + self.event_shape).to(self.observation))

    @property
    def mode(self) -> torch.Tensor:
        # The true mode of a push-forward has no closed form; F(0; s) is the image of the
        # base distribution's mode, the convention GenPO uses for evaluation.
        return self.deterministic_sample
