"""The critic: an MLP state-value network as a TorchRL ``ValueOperator``."""

from __future__ import annotations

from collections.abc import Sequence

from tensordict.utils import NestedKey
from torchrl.modules import MLP, ValueOperator

from diffrl.modules.velocity_net import Activation, activation_class


def make_value_network(
    obs_dim: int,
    hidden_sizes: Sequence[int] = (400, 200, 100),
    activation: Activation = "elu",
    observation_key: NestedKey = "observation",
) -> ValueOperator:
    """V_φ(s): reads ``observation_key`` [*B, o], writes ``"state_value"`` [*B, 1].

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> critic = make_value_network(obs_dim=3, hidden_sizes=[16])
        >>> critic(TensorDict({"observation": torch.randn(4, 3)}, batch_size=[4]))["state_value"].shape
        torch.Size([4, 1])
    """
    mlp = MLP(
        in_features=obs_dim, out_features=1, num_cells=list(hidden_sizes), activation_class=activation_class(activation)
    )
    return ValueOperator(mlp, in_keys=[observation_key])
