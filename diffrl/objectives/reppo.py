"""REPPO: relative-entropy pathwise policy optimization (Voelcker et al., arXiv 2507.11019)."""

from __future__ import annotations

from diffrl.objectives.pathwise import PathwiseTrustRegionLoss


class REPPOLoss(PathwiseTrustRegionLoss):
    """REPPO (Voelcker et al., arXiv 2507.11019): the pathwise trust-region loss with a squashed-Gaussian actor.

    The KL is the closed-form KL between the base Gaussians (exact: tanh is a bijection), the entropy
    estimate −log π(a_θ|s) of the sample. Defaults are the authors': ε = 0.1, H* = −0.5 per action
    dimension, α₀ = λ₀ = 0.01. See :class:`PathwiseTrustRegionLoss` for the terms and outputs.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from diffrl.modules import HLGaussQValue, SquashedGaussianActor
        >>> actor = SquashedGaussianActor(action_dim=2, obs_dim=3, hidden_sizes=[16])
        >>> critic = HLGaussQValue(obs_dim=3, action_dim=2, hidden_sizes=[16], num_bins=21)
        >>> loss = REPPOLoss(actor, critic)
        >>> batch = TensorDict({"observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...                     "value_target": torch.randn(8)}, batch_size=[8])
        >>> out = loss(batch)
        >>> float(out["path_kl"]), sorted(key for key in out.keys() if key.startswith("loss_"))
        (0.0, ['loss_actor', 'loss_alpha', 'loss_critic', 'loss_lambda'])
    """
