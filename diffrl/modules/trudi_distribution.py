"""The distribution of a TruDi denoising chain given observations (arXiv 2606.15260, 2409.00588).

Symbols: B the batch shape of the observations, S a sample shape, d the action dimension,
K the number of denoising steps. Chains are [*S, *B, K+1, d] in chain order (x_K first,
see :mod:`diffrl.modules.denoising_chain`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.distributions import Distribution, constraints

from diffrl.modules.denoising_chain import DenoisingChain, StepMeans


class TruDiDistribution(Distribution):
    """p_θ(x_{0:K−1} | x_K, s): the whole denoising chain as one event of shape [K+1, d].

    ``log_prob`` of a stored chain is exact (one network pass over its K inputs); the per-step
    Gaussians it is made of — means from :meth:`step_means`, stds from :attr:`stds` — are what
    the TruDi loss projects onto its trust region. The prior x_K ~ N(0, I) does not depend on θ
    and is not part of ``log_prob`` (see :class:`DenoisingChain`).

    Args:
        chain: the :class:`DenoisingChain`.
        observation: [*B, o].

    Example:
        >>> import torch
        >>> chain = DenoisingChain(action_dim=2, obs_dim=3, num_steps=4, hidden_sizes=[16])
        >>> dist = TruDiDistribution(chain, torch.randn(6, 3))
        >>> sample, log_prob = dist.rsample_and_log_prob()
        >>> sample.shape, log_prob.shape, dist.step_means(sample).mean.shape
        (torch.Size([6, 5, 2]), torch.Size([6]), torch.Size([6, 4, 2]))
        >>> torch.allclose(dist.log_prob(sample.detach()), log_prob, atol=1e-5)
        True
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, chain: DenoisingChain, observation: torch.Tensor) -> None:
        self.chain = chain
        self.observation = observation
        super().__init__(
            batch_shape=observation.shape[:-1],
            event_shape=torch.Size([chain.num_steps + 1, chain.action_dim]),
            validate_args=False,
        )

    def _observation_for(self, leading_shape: torch.Size) -> torch.Tensor:
        return self.observation.expand(*leading_shape, self.observation.shape[-1])

    @property
    def stds(self) -> torch.Tensor:
        """Per-step stds σ [K, d] in chain order (the same for every state)."""
        return self.chain.stds(self.observation)

    def step_means(self, value: torch.Tensor) -> StepMeans:
        """Per-step means μ_θ(x_k, k, s) of a chain [*S, *B, K+1, d] → [*S, *B, K, d]."""
        return self.chain.step_means(value, self._observation_for(value.shape[:-2]))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact Σ_k log N(x_{k−1}; μ_θ(x_k, k, s), σ_k²) of chains [*S, *B, K+1, d] → [*S, *B]."""
        return self.chain.log_prob(value, self._observation_for(value.shape[:-2]))

    def rsample_and_log_prob(self, sample_shape: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized chains [*S, *B, K+1, d] and their exact log-likelihood [*S, *B], one pass."""
        sample = self.chain.sample(self._observation_for(torch.Size(sample_shape) + self.batch_shape))
        return sample.chain, sample.log_prob

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def entropy(self) -> torch.Tensor:
        """Exact entropy of the chain H(x_{0:K} | s) [*B] (not of the action x_0 alone)."""
        return self.chain.entropy(self.observation).expand(self.batch_shape)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        """The noise-off chain from x_K = 0 (DDIM's deterministic sampler for ``schedule="ddim", ddim_eta=0``)."""
        return self.chain.sample(self.observation, deterministic=True).chain

    @property
    def mode(self) -> torch.Tensor:
        # A chain of Gaussians with θ-dependent means has no closed-form mode; the noise-off
        # chain is the convention DDPM/DDIM-style policies use for evaluation.
        return self.deterministic_sample
