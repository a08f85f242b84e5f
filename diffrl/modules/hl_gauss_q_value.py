"""The pathwise family's critic: a categorical Q(s, a) trained on HL-Gauss targets (arXiv 2403.03950), as REPPO has it.

Symbols: B the batch shape, o the observation size, d the action dimension, N the number of bins,
H the feature width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from diffrl.modules.velocity_net import Activation, make_activation


class HLGaussQValue(TensorDictModuleBase):
    """Q(s, a) = Σ_i softmax(logits(s, a))_i · z_i over N bin centres z_i spread evenly on [v_min, v_max].

    An MLP encoder (LayerNorm after every hidden layer) maps [s, a] to features φ(s, a) [*B, H]; a
    linear head gives the N logits. :meth:`target_distribution` turns a scalar target into its
    HL-Gauss histogram: the mass of N(target, σ²), σ = ``sigma_ratio``·bin width, on each bin
    [z_i − w/2, z_i + w/2], renormalized over the support (targets outside are clamped to it). The
    critic is trained by cross-entropy against it (Farebrother et al., arXiv 2403.03950). The head starts
    near zero (weights × 0.01, bias 0): a near-uniform histogram, Q ≈ (v_min + v_max)/2 at initialization.
    (A histogram peaked at one value, such as the log of HL-Gauss(0), saturates the softmax: on a
    one-step task the critic then needed ~10 iterations to move at all, while the temperature pumped
    the policy's std up.)

    With ``aux_head`` a linear predictor P maps φ(s, a) to a guess of the next features
    φ(s', a'), REPPO's self-predictive auxiliary loss (the loss uses :meth:`predict_next_features`).

    Reads ``observation_key`` and ``action_key``; writes ``"state_action_value"`` [*B, 1].

    Reference: REPPO, Voelcker et al., arXiv 2507.11019.

    Args:
        obs_dim: o.
        action_dim: d.
        hidden_sizes: the encoder's hidden widths (REPPO: 512 wide; H is the last).
        activation: hidden activation.
        num_bins: N (REPPO: 151).
        v_min, v_max: the support.
        sigma_ratio: σ over the bin width (REPPO: 0.75).
        aux_head: build the self-predictive head P.
        observation_key, action_key, value_key: the keys read and written.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> critic = HLGaussQValue(obs_dim=3, action_dim=2, hidden_sizes=[16], num_bins=11, v_min=-1, v_max=1)
        >>> td = critic(TensorDict({"observation": torch.randn(4, 3), "action": torch.randn(4, 2)}, [4]))
        >>> td["state_action_value"].shape
        torch.Size([4, 1])
        >>> critic.target_distribution(torch.tensor([0.2])).sum(-1)
        tensor([1.])
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (512, 512),
        activation: Activation = "silu",
        num_bins: int = 151,
        v_min: float = -10.0,
        v_max: float = 10.0,
        sigma_ratio: float = 0.75,
        aux_head: bool = True,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        value_key: NestedKey = "state_action_value",
    ) -> None:
        super().__init__()
        if num_bins < 2 or not v_min < v_max:
            raise ValueError(f"need num_bins >= 2 and v_min < v_max, got {num_bins}, {v_min}, {v_max}")
        if not hidden_sizes:
            raise ValueError("hidden_sizes must name at least one hidden layer")
        if not sigma_ratio > 0:
            raise ValueError(f"sigma_ratio must be > 0, got {sigma_ratio}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.v_min, self.v_max, self.num_bins = float(v_min), float(v_max), num_bins
        self.observation_key, self.action_key, self.value_key = observation_key, action_key, value_key
        self.in_keys, self.out_keys = [observation_key, action_key], [value_key]
        self.bin_width = (v_max - v_min) / (num_bins - 1)
        self.sigma = sigma_ratio * self.bin_width
        layers: list[nn.Module] = []
        width = obs_dim + action_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), make_activation(activation)]
            width = hidden
        self.encoder = nn.Sequential(*layers)
        self.feature_dim = width
        self.head = nn.Linear(width, num_bins)
        with torch.no_grad():
            self.head.weight.mul_(0.01)
            self.head.bias.zero_()
        self.predictor = nn.Linear(width, width) if aux_head else None

    def target_distribution(self, target: torch.Tensor) -> torch.Tensor:
        """The HL-Gauss histogram of each scalar target: [*B] → [*B, N] (rows sum to 1)."""
        target = target.clamp(self.v_min, self.v_max).unsqueeze(-1)
        half = self.bin_width / 2
        edges = torch.linspace(
            self.v_min - half, self.v_max + half, self.num_bins + 1, dtype=target.dtype, device=target.device
        )
        cdf = torch.special.erf((edges - target) / (self.sigma * math.sqrt(2)))
        mass = cdf[..., 1:] - cdf[..., :-1]
        return mass / (cdf[..., -1:] - cdf[..., :1])

    def features(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """φ(s, a): [*B, o], [*B, d] → [*B, H]."""
        return self.encoder(torch.cat([observation, action], dim=-1))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[*B, H] → [*B, N]."""
        return self.head(features)

    def value(self, logits: torch.Tensor) -> torch.Tensor:
        """Σ softmax(logits)·z: [*B, N] → [*B]."""
        return (logits.softmax(-1) * self.centres(logits)).sum(-1)

    def centres(self, like: torch.Tensor) -> torch.Tensor:
        """The bin centres z [N], in ``like``'s dtype and device."""
        return torch.linspace(self.v_min, self.v_max, self.num_bins, dtype=like.dtype, device=like.device)

    def predict_next_features(self, features: torch.Tensor) -> torch.Tensor:
        """P(φ(s, a)) ≈ φ(s', a'): [*B, H] → [*B, H]."""
        if self.predictor is None:
            raise RuntimeError("this critic was built without the auxiliary head (aux_head=False)")
        return self.predictor(features)

    def q_value(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a): [*B, o], [*B, d] → [*B]."""
        return self.value(self.logits(self.features(observation, action)))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        value = self.q_value(tensordict.get(self.observation_key), tensordict.get(self.action_key))
        tensordict.set(self.value_key, value.unsqueeze(-1))
        return tensordict
