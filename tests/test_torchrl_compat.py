"""Each wrapper of TorchRL's private API returns what TorchRL's public behaviour implies, on the installed TorchRL."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.objectives import ClipPPOLoss

from diffrl.envs import ObservationNormalizer, make_gym_env
from diffrl.modules import GaussianActor, make_value_network
from diffrl.torchrl_compat import (
    collector_carried_step,
    ppo_clip_bounds,
    ppo_clip_value_as_float,
    ppo_has_critic,
    ppo_normalized_advantage,
    selects_out_keys,
    vecnorm_statistics,
)


def test_ppo_accessors_match_the_loss_definition():
    torch.manual_seed(0)
    actor, critic = GaussianActor(2, 3, [8]), make_value_network(3, [8])
    loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, normalize_advantage=True)
    with torch.no_grad():
        batch = actor(TensorDict({"observation": torch.randn(16, 3)}, batch_size=[16]))
    low, high = ppo_clip_bounds(loss)  # float32 buffers
    assert math.isclose(low, math.log1p(-0.2), rel_tol=1e-6) and math.isclose(high, math.log1p(0.2), rel_tol=1e-6)
    assert ppo_has_critic(loss) and not ppo_has_critic(ClipPPOLoss(actor, None, critic_coeff=None))
    advantage = torch.randn(16, 1) * 5 + 3
    normalized = ppo_normalized_advantage(loss, advantage, batch)
    torch.testing.assert_close(normalized.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("clip_value", [0.2, None])
def test_the_value_clip_as_a_float_gives_the_losses_and_gradients_of_the_buffer(clip_value):
    torch.manual_seed(0)
    actor, critic = GaussianActor(2, 3, [8]), make_value_network(3, [8])
    reference = ClipPPOLoss(actor, critic, clip_value=clip_value, functional=False)
    converted = ClipPPOLoss(actor, critic, clip_value=clip_value, functional=False)
    converted = ppo_clip_value_as_float(ppo_clip_value_as_float(converted))  # twice: idempotent
    assert converted.clip_value == (None if clip_value is None else pytest.approx(clip_value))
    assert clip_value is None or type(converted.clip_value) is float
    with torch.no_grad():
        batch = actor(TensorDict({"observation": torch.randn(64, 3)}, batch_size=[64]))
        # Old values around the critic's, so that some rows are clipped and others not.
        batch["state_value"] = critic(batch.clone())["state_value"] + 0.3 * torch.randn(64, 1)
    batch["advantage"], batch["value_target"] = torch.randn(64, 1), torch.randn(64, 1)
    outputs = []
    for loss in (reference, converted):
        out = loss(batch.clone())
        parameters = list(actor.parameters()) + list(critic.parameters())
        gradients = torch.autograd.grad(out["loss_objective"] + out["loss_critic"], parameters)
        outputs.append((out.detach(), gradients))
    (expected, expected_gradients), (got, got_gradients) = outputs
    if clip_value is not None:
        assert 0 < float(expected["value_clip_fraction"]) < 1
    assert sorted(got.keys()) == sorted(expected.keys())
    for key in expected.keys():
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    for got_gradient, expected_gradient in zip(got_gradients, expected_gradients, strict=True):
        torch.testing.assert_close(got_gradient, expected_gradient, rtol=0, atol=0)


def test_carried_step_is_the_next_rollout_input():
    env = make_gym_env("HalfCheetah-v5", 2, seed=0, max_episode_steps=5)
    actor = GaussianActor(6, 17, [8])
    collector = Collector(env, actor, frames_per_batch=6, total_frames=-1, auto_register_policy_transforms=False)
    batch = next(iter(collector))
    carried = collector_carried_step(collector)
    # The carried observation is the last step's next observation, reset where an episode ended.
    last = batch[:, -1]
    not_done = ~last["next", "done"].squeeze(-1)
    torch.testing.assert_close(carried["observation"][not_done], last["next", "observation"][not_done])
    collector.shutdown()


def test_vecnorm_statistics_are_the_running_moments_of_every_observation_seen():
    from torchrl.envs import TransformedEnv

    normalizer = ObservationNormalizer.for_key("observation")
    assert vecnorm_statistics(normalizer) is None
    steps = 4
    TransformedEnv(make_gym_env("HalfCheetah-v5", 2, seed=3), normalizer).rollout(steps, break_when_any_done=False)
    raw = make_gym_env("HalfCheetah-v5", 2, seed=3)
    torch.manual_seed(0)
    seen = raw.rollout(steps, break_when_any_done=False)  # actions differ: only the reset matches, so compare it
    count, mean, second = vecnorm_statistics(normalizer)
    assert int(count["observation"].max()) == 2 * (steps + 1)  # the reset and every step, both envs
    assert mean["observation"].shape == seen["observation"].shape[-1:]
    # The normalization is (x - E[x]) / sqrt(E[x²] - E[x]²), floored at eps = 1e-2.
    probe = TensorDict({"observation": seen["observation"][:, 0]}, batch_size=[2])
    scale = (second["observation"] - mean["observation"] ** 2).clamp_min(0).sqrt().clamp_min(1e-2)
    expected = (probe["observation"] - mean["observation"]) / scale
    normalized = normalizer.normalize(probe)["observation"]
    torch.testing.assert_close(normalized, expected, atol=1e-4, rtol=1e-4)


def test_out_key_selection_is_detected_on_a_torchrl_loss():
    loss = ClipPPOLoss(GaussianActor(2, 3, [8]), make_value_network(3, [8]))
    assert not selects_out_keys(loss)
    loss.select_out_keys("loss_objective")
    assert selects_out_keys(loss)
