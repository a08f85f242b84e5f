"""The input checks every diffrl actor shares (read_observation): a missing key or a wrong dtype is named."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from diffrl.modules import DIMEActor, GaussianActor, GenPOActor, GenPOFlow, SquashedGaussianActor, TruDiActor
from diffrl.modules.denoising_chain import DenoisingChain

OBS_DIM, ACTION_DIM = 3, 2
ACTORS = {
    "gaussian": lambda: GaussianActor(ACTION_DIM, OBS_DIM, [8]),
    "genpo": lambda: GenPOActor(GenPOFlow(ACTION_DIM, OBS_DIM, num_steps=2, hidden_sizes=[8])),
    "trudi_ppo": lambda: TruDiActor(DenoisingChain(ACTION_DIM, OBS_DIM, num_steps=2, hidden_sizes=[8])),
    "dime": lambda: DIMEActor(ACTION_DIM, OBS_DIM, num_steps=2, hidden_sizes=[8]),
    "squashed_gaussian": lambda: SquashedGaussianActor(ACTION_DIM, OBS_DIM, [8]),
}


@pytest.mark.parametrize("kind", sorted(ACTORS))
def test_a_missing_observation_key_is_named_with_the_keys_there_are(kind):
    actor = ACTORS[kind]()
    with pytest.raises(
        KeyError, match=r"reads the observation 'observation', which the tensordict does not have .*'obs'"
    ):
        actor(TensorDict({"obs": torch.zeros(4, OBS_DIM)}, batch_size=[4]))


@pytest.mark.parametrize("kind", sorted(ACTORS))
def test_a_float64_observation_for_float32_weights_says_what_to_cast(kind):
    actor = ACTORS[kind]()
    with pytest.raises(
        TypeError, match=r"observation 'observation' is torch.float64 and the actor's weights are torch.float32"
    ):
        actor(TensorDict({"observation": torch.zeros(4, OBS_DIM, dtype=torch.float64)}, batch_size=[4]))
    # Cast as the message says, it runs.
    result = actor.to(torch.float64)(TensorDict({"observation": torch.zeros(4, OBS_DIM, dtype=torch.float64)}, [4]))
    assert result["action"].dtype == torch.float64 and result["action"].shape == (4, ACTION_DIM)
