"""TruDi's denoising-chain policy as a TensorDict module (arXiv 2606.15260; chain: arXiv 2409.00588).

Symbols: B the batch shape, o the observation size, d the action dimension, K the number of
denoising steps.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import exploration_type

from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.generative_policy import DETERMINISTIC_EXPLORATION, GenerativePolicy
from diffrl.modules.trudi_distribution import TruDiDistribution


class TruDiActor(GenerativePolicy):
    """Samples a K-step Gaussian denoising chain and writes the action, the chain and its likelihood.

    Reads ``observation_key`` [*B, o] and writes

    - ``action_key`` [*B, d]: x_0, the executed action;
    - ``chain_key`` [*B, K+1, d]: the whole chain x_K..x_0 — the sample whose likelihood the
      loss evaluates;
    - ``means_key`` [*B, K, d] and ``stds_key`` [*B, K, d]: the per-step Gaussians the chain was
      drawn from (chain order), i.e. the old policy of TruDi's trust region, stored so that
      the loss need not recompute them;
    - ``log_prob_key`` [*B]: the exact chain log-likelihood Σ_k log N(x_{k−1}; μ_k, σ_k²), from
      the noise, detached.

    Sampling runs without gradient. When TorchRL's exploration type is deterministic
    (``DETERMINISTIC``, ``MODE`` or ``MEAN``) the noise-off chain runs from x_K = 0 (DDIM's
    deterministic sampler for ``schedule="ddim", ddim_eta=0``); the log-prob written then is
    that chain's density under the stochastic policy (see :meth:`DenoisingChain.sample`).

    Args:
        chain: the :class:`~diffrl.modules.denoising_chain.DenoisingChain`.
        squash: execute tanh(x_0) instead of x_0 (bounded actions). ``"action_log_prob"`` stays
            the likelihood of the stored, pre-squash chain: tanh is a fixed bijection, so its
            Jacobian cancels in every ratio and KL the loss uses.
        observation_key: where the observation is read (Isaac Lab's own wrapper: ``"policy"``).
        action_key, chain_key, means_key, stds_key, log_prob_key: where the outputs are written.
        check_finite: check observations for NaN/inf through :attr:`numerics` (at once by default;
            once per rollout in the trainer).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = TruDiActor(DenoisingChain(action_dim=2, obs_dim=3, num_steps=4, hidden_sizes=[16]))
        >>> td = actor(TensorDict({"observation": torch.randn(5, 3)}, batch_size=[5]))
        >>> td["action"].shape, td["denoising_chain"].shape, td["action_log_prob"].shape
        (torch.Size([5, 2]), torch.Size([5, 5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        chain: DenoisingChain,
        *,
        squash: bool = False,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        chain_key: NestedKey = "denoising_chain",
        means_key: NestedKey = "denoising_means",
        stds_key: NestedKey = "denoising_stds",
        log_prob_key: NestedKey = "action_log_prob",
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            observation_key=observation_key, sample_key=chain_key, log_prob_key=log_prob_key, check_finite=check_finite
        )
        self.chain = chain
        self.action_key, self.chain_key = action_key, chain_key
        self.means_key, self.stds_key = means_key, stds_key
        self.squash = squash
        self.in_keys = [observation_key]
        self.out_keys = [action_key, chain_key, means_key, stds_key, log_prob_key]

    @property
    def num_steps(self) -> int:
        return self.chain.num_steps

    @property
    def learn_std(self) -> bool:
        return self.chain.learn_std

    @property
    def obs_dim(self) -> int:
        return self.chain.obs_dim

    @property
    def action_dim(self) -> int:
        return self.chain.action_dim

    @property
    def noise_dim(self) -> int:
        """(K+1)·d: x_K, then the K steps' noises."""
        return (self.chain.num_steps + 1) * self.chain.action_dim

    def export_sampler(self) -> nn.Module:
        return TruDiSampler(self.chain, self.squash)

    def sampler_description(self) -> dict[str, Any]:
        return {
            "kind": "trudi_denoising_chain",
            "steps": self.chain.num_steps,
            "noise_layout": "[K+1, d] row-major, chain order: x_K (prior draw), then eps of the steps k = K..1",
            "squash": "tanh" if self.squash else None,
        }

    def get_dist(self, tensordict: TensorDictBase) -> TruDiDistribution:
        """The policy's distribution over denoising chains at the tensordict's observations."""
        return TruDiDistribution(self.chain, self._observation(tensordict))

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        observation = self._observation(tensordict)
        sample = self.chain.sample(observation, deterministic=exploration_type() in DETERMINISTIC_EXPLORATION)
        final = sample.chain[..., -1, :]
        # tanh makes a new tensor; otherwise a copy, not a view: an env transform editing the
        # action in place must not alter the chain.
        tensordict.set(self.action_key, final.tanh() if self.squash else final.clone())
        tensordict.set(self.chain_key, sample.chain)
        tensordict.set(self.means_key, sample.mean)
        tensordict.set(self.stds_key, self.chain.stds(observation).expand_as(sample.mean))
        tensordict.set(self.log_prob_key, sample.log_prob)
        return tensordict


class TruDiSampler(nn.Module):
    """The K-step denoising chain from explicit noise: [B, o], [B, (K+1)·d] → action [B, d]."""

    def __init__(self, chain: DenoisingChain, squash: bool) -> None:
        super().__init__()
        self.chain, self.squash = chain, squash

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        steps = noise.unflatten(-1, (self.chain.num_steps + 1, self.chain.action_dim))
        x = self.chain.sample(observation, noise=steps).chain[..., -1, :]
        return x.tanh() if self.squash else x
